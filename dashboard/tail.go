package dashboard

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/safetext"
)

// tailWriteTimeout bounds each write of a live tail, so that a client that
// stops reading cannot hold the tail (and its Redis connection) for ever.
const tailWriteTimeout = 15 * time.Second

// tailView is the live tail page.
type tailView struct {
	Events string // the URL of the event stream
}

// tailEvent is one entry of a live tail, as its event's JSON data. Its
// texts are escaped and cut; the page shows them as text.
type tailEvent struct {
	Ref     string `json:"ref"`
	Href    string `json:"href"` // the entry's detail page, on this origin
	Op      string `json:"op"`
	Task    string `json:"task"`
	Outcome string `json:"outcome"`
	Fields  string `json:"fields"`
}

func (h *Handler) tailPage(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	p := page{Prefix: h.opts.Prefix}
	h.render(w, r, http.StatusOK, "tail", "Live tail", s, tailView{Events: p.Link("tail/events", "stream", s.name)})
}

// tailEvents serves the live tail as Server-Sent Events: an "entry" event
// per entry added to the stream, with the entry's Ref as the event id (so
// that a reconnecting EventSource resumes after it, by Last-Event-ID), and
// a "failure" event before it ends on an error. It ends when the client
// goes away (the request's context ends); inspect.Inspector.Tail returns
// within about a second of that, and nothing of the tail outlives it.
func (h *Handler) tailEvents(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	select {
	case h.tails <- struct{}{}:
		defer func() { <-h.tails }()
	default:
		h.fail(w, r, http.StatusServiceUnavailable, fmt.Errorf("%d live tails are open already; close one", MaxTails))
		return
	}
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = r.FormValue("from")
	}
	if from == "" || from == "$" {
		// Fix "now" before the client hears that the tail is open, so that
		// what it adds once it has heard so is never missed.
		if from, err = tailNow(r, s); err != nil {
			h.fail(w, r, http.StatusBadGateway, err)
			return
		}
	}
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event, id string, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(tailWriteTimeout))
		if id != "" {
			id = "id: " + id + "\n"
		}
		if _, err := fmt.Fprintf(w, "%sevent: %s\ndata: %s\n\n", id, event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if _, err := fmt.Fprint(w, "retry: 3000\n: following\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	p := page{Prefix: h.opts.Prefix}
	err = s.in.Tail(r.Context(), from, func(e inspect.Entry) error {
		return send("entry", sseID(e.Ref), h.tailEventOf(p, s, e))
	})
	if err != nil && r.Context().Err() == nil && !errors.Is(err, http.ErrHandlerTimeout) {
		h.opts.Logger.Warn("dashboard: live tail ended", "stream", s.name, "err", err)
		_ = send("failure", "", map[string]string{"error": safetext.Escape(err.Error())})
	}
}

// tailNow returns the position of the stream's newest entry: "0" when it
// is empty, or of a partitioned stream the Ref of the newest entry of all
// partitions. (Then an entry added to another partition in the same
// millisecond as that one, with an id not above it, is not shown.)
func tailNow(r *http.Request, s *stream) (string, error) {
	si, err := s.in.Info(r.Context())
	if err != nil {
		return "", err
	}
	if len(si.Partitions) == 0 {
		return cmp.Or(si.LastID, "0"), nil
	}
	from, newest := "0", ""
	for i, p := range si.Partitions {
		if p.LastID != "" && (newest == "" || compareIDs(p.LastID, newest) > 0) {
			newest, from = p.LastID, strconv.Itoa(i)+"/"+p.LastID
		}
	}
	return from, nil
}

// compareIDs orders two stream ids "ms-seq".
func compareIDs(a, b string) int {
	parse := func(id string) (uint64, uint64) {
		ms, seq, _ := strings.Cut(id, "-")
		x, _ := strconv.ParseUint(ms, 10, 64)
		y, _ := strconv.ParseUint(seq, 10, 64)
		return x, y
	}
	am, as := parse(a)
	bm, bs := parse(b)
	return cmp.Or(cmp.Compare(am, bm), cmp.Compare(as, bs))
}

// sseID returns ref when it can be an event id (no line break, no NUL).
func sseID(ref string) string {
	if strings.ContainsAny(ref, "\r\n\x00") {
		return ""
	}
	return ref
}

// tailEventOf describes entry e for the live tail.
func (h *Handler) tailEventOf(p page, s *stream, e inspect.Entry) tailEvent {
	ev := tailEvent{Ref: e.Ref, Href: p.Link("entry", "stream", s.name, "ref", e.Ref)}
	switch m := e.Message; {
	case m == nil:
		ev.Outcome = "not a message: " + errText(e.DecodeErr)
	case m.Success:
		ev.Op, ev.Task, ev.Outcome = m.OperationID, m.TaskID, "success"
	default:
		ev.Op, ev.Task, ev.Outcome = m.OperationID, m.TaskID, "failure: "+m.Error
	}
	names := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteString("  ")
		}
		b.WriteString(safetext.Cap(k, listCut/2) + "=" + safetext.Cap(e.Fields[k], listCut))
		if b.Len() > 2*listCut {
			break
		}
	}
	ev.Ref, ev.Op, ev.Task = safetext.Cap(ev.Ref, listCut), safetext.Cap(ev.Op, listCut), safetext.Cap(ev.Task, listCut)
	ev.Outcome, ev.Fields = safetext.Cap(ev.Outcome, listCut), safetext.Cap(b.String(), 2*listCut)
	return ev
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
