package taskstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
)

// Defaults applied by [NewSSEHandler] to zero [SSEConfig] fields.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultRetry        = 3 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultLastIDParam  = "last_event_id"
	DefaultTaskIDPath   = "task_id"
)

// SSEConfig configures the handler of [NewSSEHandler]. A zero field takes
// its default.
type SSEConfig struct {
	// TaskID returns the id of the task a request is for. Default:
	// r.PathValue("task_id"), for a pattern such as
	// "GET /tasks/{task_id}/events".
	TaskID func(r *http.Request) string

	// UserID returns the id of the user making the request (from a session
	// cookie or a verified token, say). When both it and the task's
	// user_id are set and differ, the request is refused with 403.
	// Default: nil (no ownership check).
	UserID func(r *http.Request) string

	// LastIDParam is the query parameter that carries the last event id
	// the client saw, for clients that cannot set the Last-Event-ID
	// header (which wins when both are there). Default: DefaultLastIDParam
	// ("last_event_id").
	LastIDParam string

	// Heartbeat is how long the stream may be quiet before the handler
	// writes a comment line (": heartbeat"), which keeps proxies from
	// closing it. Default: DefaultHeartbeat (15s).
	Heartbeat time.Duration

	// Retry is the reconnection delay the stream asks clients to wait
	// ("retry:" field). Default: DefaultRetry (3s).
	Retry time.Duration

	// WriteTimeout bounds each write to the client: a client that does not
	// take a frame within it is cut off (its connection closed). With the
	// subscription's buffer it bounds what a slow client costs. Default:
	// DefaultWriteTimeout (10s).
	WriteTimeout time.Duration

	// Logger receives the handler's errors (a failed registry lookup, say).
	// Default: slog.Default().
	Logger *slog.Logger
}

type sseHandler struct {
	hub      *Hub
	registry completion.TaskRegistry
	cfg      SSEConfig
	log      *slog.Logger
}

// NewSSEHandler returns an http.Handler that streams a task's events as
// Server-Sent Events, from any pod: the frames are
//
//	id: <stream entry id>
//	data: <the event's JSON>
//
// preceded by a "retry:" hint and interleaved with ": heartbeat" comments.
// A client that reconnects with the Last-Event-ID header (EventSource does
// so on its own), or the LastIDParam query parameter, resumes after that
// event: nothing lost, nothing repeated. The response ends after the finish
// event. A task that is no longer running gets its stream and a finish
// event (the Python service's rule), and a client resuming after the finish
// event gets 204 No Content, which tells EventSource to stop reconnecting.
//
// Errors: 400 for an invalid task id or a malformed last event id, 404 for a
// task the registry does not know (no stream is created by the request),
// 403 when [SSEConfig.UserID] and the task's user_id are both set and
// differ, 503 while the hub does not run or the registry fails. A client
// whose subscription is cut off as too slow (see HubConfig.Buffer) gets a
// final frame "event: cutoff" with an error event as its data, and the
// response ends; reconnecting with Last-Event-ID resumes. A client that goes
// away ends the request's goroutine and its subscription at once.
//
// registry is typically a *redisregistry.Registry. It returns an error
// wrapping [completion.ErrNilArgument] for a nil argument and one wrapping
// [completion.ErrInvalidConfig] for a negative duration.
func NewSSEHandler(hub *Hub, registry completion.TaskRegistry, cfg SSEConfig) (http.Handler, error) {
	switch {
	case hub == nil:
		return nil, fmt.Errorf("%w: taskstream.NewSSEHandler: hub", completion.ErrNilArgument)
	case isNil(registry):
		return nil, fmt.Errorf("%w: taskstream.NewSSEHandler: registry", completion.ErrNilArgument)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"Heartbeat", &cfg.Heartbeat, DefaultHeartbeat}, {"Retry", &cfg.Retry, DefaultRetry}, {"WriteTimeout", &cfg.WriteTimeout, DefaultWriteTimeout}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < time.Millisecond:
			return nil, fmt.Errorf("%w: SSEConfig.%s is %v; it must be at least 1ms (zero means the default, %v)", completion.ErrInvalidConfig, d.name, *d.v, d.def)
		}
	}
	if cfg.TaskID == nil {
		cfg.TaskID = func(r *http.Request) string { return r.PathValue(DefaultTaskIDPath) }
	}
	if cfg.LastIDParam == "" {
		cfg.LastIDParam = DefaultLastIDParam
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &sseHandler{hub: hub, registry: registry, cfg: cfg, log: log}, nil
}

// cutoffText is the errorText of the final frame of a client cut off as
// too slow.
const cutoffText = "taskstream: the client fell behind and was cut off; reconnect with Last-Event-ID to resume"

func (h *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	taskID, last, ok := h.request(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	task, ok := h.authorize(w, r, taskID)
	if !ok {
		return
	}
	lastID := last.String()
	if !last.isZero() {
		// Resuming: after the finish event there is nothing more, ever.
		finished, err := h.finished(ctx, taskID, lastID)
		switch {
		case err != nil:
			unavailable(w, "task stream unavailable")
			return
		case finished:
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	running := task.Status == "" || task.Status == redisregistry.StatusRunning
	var sub *Subscription
	if running {
		var err error
		if sub, err = h.hub.Subscribe(ctx, taskID, lastID); err != nil {
			unavailable(w, err.Error())
			return
		}
		defer sub.Close()
	}
	sw := h.open(w)
	defer sw.release()
	if !sw.flush() {
		return
	}
	if !running {
		h.replay(ctx, sw, taskID, lastID)
		return
	}
	h.follow(ctx, sw, sub, taskID)
}

// request checks the request: its method, the task id and the last event
// id (the Last-Event-ID header, or the query parameter). It answers the
// request itself and returns false when they are bad.
func (h *sseHandler) request(w http.ResponseWriter, r *http.Request) (string, streamID, bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return "", streamID{}, false
	}
	taskID := h.cfg.TaskID(r)
	if err := checkTaskID(taskID); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", streamID{}, false
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get(h.cfg.LastIDParam)
	}
	last, err := parseID(lastID)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", streamID{}, false
	}
	return taskID, last, true
}

// authorize looks the task up and checks that the request's user owns it:
// 404 for an unknown task, 403 for another user's, 503 when the registry
// does not answer.
func (h *sseHandler) authorize(w http.ResponseWriter, r *http.Request, taskID string) (completion.Task, bool) {
	ctx := r.Context()
	task, err := h.registry.LookupTask(ctx, "", taskID)
	switch {
	case errors.Is(err, completion.ErrTaskNotFound):
		http.Error(w, "task not found", http.StatusNotFound)
		return task, false
	case err != nil:
		if ctx.Err() == nil {
			h.log.Warn("taskstream: SSE: look the task up", "task_id", taskID, "err", err)
		}
		unavailable(w, "task registry unavailable")
		return task, false
	}
	if h.cfg.UserID != nil {
		if u := h.cfg.UserID(r); u != "" && task.UserID != "" && u != task.UserID {
			http.Error(w, "the task belongs to another user", http.StatusForbidden)
			return task, false
		}
	}
	return task, true
}

// finished reports whether one of the last events at or before lastID
// (the one a resuming client saw last, and a few before it) is the finish
// event: the client has seen the whole stream.
func (h *sseHandler) finished(ctx context.Context, taskID, lastID string) (bool, error) {
	evs, err := h.hub.streams.lastEvents(ctx, taskID, lastID, seedCount)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		if e.IsFinish() {
			return true, nil
		}
	}
	return false, nil
}

// open starts the event stream: its headers and the retry hint (not yet
// flushed).
func (h *sseHandler) open(w http.ResponseWriter) *sseWriter {
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: rc, timeout: h.cfg.WriteTimeout}
	sw.printf("retry: %d\n\n", h.cfg.Retry.Milliseconds())
	return sw
}

// follow writes the subscription's events as they come, with a heartbeat
// comment when nothing was written for a while, until the finish event,
// the subscription's end, a failed write or the request's end.
func (h *sseHandler) follow(ctx context.Context, sw *sseWriter, sub *Subscription, taskID string) {
	heartbeat := time.NewTimer(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		n, done := h.drain(sw, sub, taskID)
		if done {
			return
		}
		if n > 0 {
			if !sw.flush() {
				return
			}
			heartbeat.Reset(h.cfg.Heartbeat)
		}
		select {
		case <-sub.ready:
		case <-heartbeat.C:
			sw.printf(": heartbeat\n\n")
			if !sw.flush() {
				return
			}
			heartbeat.Reset(h.cfg.Heartbeat)
		case <-ctx.Done():
			return
		}
	}
}

// drain writes what the subscription has buffered, unflushed, and returns
// how many events it wrote; done when the stream is over (the finish
// event, flushed, or the subscription's end, written).
func (h *sseHandler) drain(sw *sseWriter, sub *Subscription, taskID string) (n int, done bool) {
	for {
		e, err, ok := sub.poll()
		if !ok {
			return n, false
		}
		if err != nil {
			if n == 0 || sw.flush() {
				h.end(sw, taskID, err)
			}
			return n, true
		}
		sw.event(e)
		n++
		if e.IsFinish() {
			sw.flush()
			return n, true
		}
	}
}

// end writes how a subscription ended other than by the finish event.
func (h *sseHandler) end(sw *sseWriter, taskID string, err error) {
	switch {
	case errors.Is(err, ErrSlowSubscriber):
		sw.printf("event: cutoff\ndata: {\"type\":\"error\",\"errorText\":%s}\n\n", completion.StringResult(cutoffText))
	case errors.Is(err, ErrHubStopped):
		sw.printf(": server shutting down, reconnect\n\n")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrClosed):
		return
	default:
		h.log.Warn("taskstream: SSE: subscription failed", "task_id", taskID, "err", err)
		sw.printf(": error, reconnect\n\n")
	}
	sw.flush()
}

// replay writes the stream of a task that is no longer running after
// lastID, and a finish event (without an id) when the stream holds none.
func (h *sseHandler) replay(ctx context.Context, sw *sseWriter, taskID, lastID string) {
	for {
		evs, err := h.hub.streams.Read(ctx, taskID, lastID, DefaultReadLimit)
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("taskstream: SSE: read the stream", "task_id", taskID, "err", err)
			}
			return
		}
		for _, e := range evs {
			if len(e.Data) == 0 {
				continue
			}
			sw.event(e)
			if e.IsFinish() {
				sw.flush()
				return
			}
		}
		if !sw.flush() {
			return
		}
		if len(evs) < DefaultReadLimit {
			break
		}
		lastID = evs[len(evs)-1].ID
	}
	sw.printf("data: %s\n\n", FinishEvent)
	sw.flush()
}

func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// sseWriter writes frames; after a failed write it writes nothing more.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	err     error
}

// release clears the write deadline: the connection may serve more
// requests.
func (s *sseWriter) release() { _ = s.rc.SetWriteDeadline(time.Time{}) }

func (s *sseWriter) write(b []byte) {
	if s.err != nil {
		return
	}
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.err = err
		return
	}
	_, s.err = s.w.Write(b)
}

func (s *sseWriter) printf(format string, args ...any) {
	s.write(fmt.Appendf(nil, format, args...))
}

// event writes e as a frame: its id, and its data line by line.
func (s *sseWriter) event(e Event) {
	b := make([]byte, 0, len(e.Data)+len(e.ID)+16)
	b = append(b, "id: "...)
	b = append(b, e.ID...)
	b = append(b, '\n')
	data := []byte(e.Data)
	if bytes.ContainsAny(data, "\r\n") { // SSE ends a line at CR, LF or CRLF
		data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		b = append(b, "data: "...)
		b = append(b, line...)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	s.write(b)
}

// flush sends what was written; it reports whether all of it got out.
func (s *sseWriter) flush() bool {
	if s.err == nil {
		if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			s.err = err
		} else if err := s.rc.Flush(); err != nil {
			s.err = err
		}
	}
	return s.err == nil
}
