// Command apiserver is an API server that embeds a completion.Consumer, the
// way the Python service this library replaces runs it: browsers start
// long-running tasks and watch them finish over Server-Sent Events, on
// whichever pod they are connected to.
//
//	go run ./examples/apiserver            # embedded miniredis unless REDIS_ADDR is set
//	open http://localhost:8080/
//
// Endpoints:
//
//	GET  /                        a page that starts tasks and shows their completions
//	POST /tasks?session=S         registers a task and starts a (simulated) operation
//	GET  /events?session=S        Server-Sent Events: one "completion" event per finished task
//	GET  /healthz                 200 while the consumer runs, 503 when degraded or stopping
//
// SIGTERM or Ctrl-C shuts down gracefully: HTTP first, then the consumer,
// which finishes running handlers and leaves the rest pending for other
// pods.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "HTTP listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, log); err != nil {
		log.Error("apiserver stopped", "err", err)
		os.Exit(1)
	}
}

// server holds what the HTTP handlers share.
type server struct {
	rdb      *redis.Client
	stream   string
	registry *completion.MemoryRegistry
	consumer *completion.Consumer
	hub      *hub
	log      *slog.Logger
}

func run(ctx context.Context, addr string, log *slog.Logger) error {
	redisAddr := os.Getenv("REDIS_ADDR")
	if redisAddr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		redisAddr = mr.Addr()
		log.Info("using an embedded miniredis; set REDIS_ADDR to use a real server")
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()

	s, err := newServer(rdb, log)
	if err != nil {
		return err
	}
	consumer := s.consumer

	httpSrv := &http.Server{Addr: addr, Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	consumerCtx, stopConsumer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsumer()
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- consumer.Run(consumerCtx) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.ListenAndServe() }()
	log.Info("listening", "addr", "http://"+addr+"/")

	select {
	case <-ctx.Done():
	case err := <-httpDone:
		stopConsumer()
		<-consumerDone
		return err
	case err := <-consumerDone:
		_ = httpSrv.Close()
		return fmt.Errorf("consumer: %w", err)
	}
	log.Info("shutting down")
	s.hub.closeAll() // end the event streams, so Shutdown need not wait for them
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	stopConsumer()
	return <-consumerDone
}

// newServer wires a consumer of the example's stream to the SSE hub.
func newServer(rdb *redis.Client, log *slog.Logger) (*server, error) {
	s := &server{
		rdb:      rdb,
		stream:   "apiserver:completions",
		registry: &completion.MemoryRegistry{}, // use a Redis-backed registry when running several pods
		hub:      newHub(),
		log:      log,
	}
	consumer, err := completion.NewConsumer(rdb, s.registry, completion.HandlerFunc(s.handle), completion.Config{
		Stream: s.stream,
		Block:  time.Second,
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	s.consumer = consumer
	return s, nil
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("POST /tasks", s.startTask)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// startTask registers a task and starts a simulated long operation, which
// publishes its completion when done, as another service would.
func (s *server) startTask(w http.ResponseWriter, r *http.Request) {
	session := r.URL.Query().Get("session")
	if session == "" {
		http.Error(w, "session is required", http.StatusBadRequest)
		return
	}
	id := fmt.Sprintf("%08x", rand.Uint32())
	task := completion.Task{TaskID: "task-" + id, SessionID: session, ToolCallID: "call-" + id, OperationID: "op-" + id, Status: "running", CreatedAt: time.Now()}
	s.registry.Register(task)
	go func() {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond) // the "work"
		msg := completion.Message{OperationID: task.OperationID, TaskID: task.TaskID, Success: rand.IntN(4) > 0}
		if msg.Success {
			msg.Result, _ = completion.ObjectResult(map[string]any{"words": rand.IntN(1000)})
		} else {
			msg.Error = "the operation failed (simulated)"
		}
		if _, err := completion.Publish(context.Background(), s.rdb, s.stream, msg); err != nil {
			s.log.Error("publish", "err", err)
		}
	}()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(task)
}

// handle is the CompletionHandler: it forwards the completion to the
// browsers watching the task's session.
func (s *server) handle(ctx context.Context, c *completion.Completion) error {
	ev, err := json.Marshal(map[string]any{
		"task_id": c.Task.TaskID, "operation_id": c.Message.OperationID,
		"success": c.Message.Success, "result": c.Message.Result, "error": c.Message.Error,
	})
	if err != nil {
		return completion.Permanent(err)
	}
	s.hub.send(c.Task.SessionID, ev)
	return nil
}

// events streams a session's completions as Server-Sent Events.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	session := r.URL.Query().Get("session")
	flusher, ok := w.(http.Flusher)
	if session == "" || !ok {
		http.Error(w, "session is required", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	ch, unsubscribe := s.hub.subscribe(session)
	defer unsubscribe()
	fmt.Fprint(w, ": connected\n\n")
	flusher.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(w, "event: completion\ndata: %s\n\n", ev)
			flusher.Flush()
		}
	}
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	state := s.consumer.State()
	st := s.consumer.Stats()
	code := http.StatusOK
	if state != completion.StateRunning {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"state": state.String(), "succeeded": st.Handled, "dead_lettered": st.DeadLettered,
		"in_flight": st.InFlight, "last_error": st.LastError,
	})
}

// hub fans completions out to the event streams of a session.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[chan []byte]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[string]map[chan []byte]struct{}{}} }

func (h *hub) subscribe(session string) (<-chan []byte, func()) {
	ch := make(chan []byte, 16)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	if h.subs[session] == nil {
		h.subs[session] = map[chan []byte]struct{}{}
	}
	h.subs[session][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[session][ch]; ok {
			delete(h.subs[session], ch)
			close(ch)
		}
	}
}

// send delivers ev to the session's subscribers; a subscriber too slow to
// take it misses it (the browser can reload the task's state).
func (h *hub) send(session string, ev []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[session] {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, subs := range h.subs {
		for ch := range subs {
			close(ch)
			delete(subs, ch)
		}
	}
}

const page = `<!doctype html>
<meta charset="utf-8">
<title>completion: apiserver example</title>
<h1>Long-running tasks</h1>
<button id="start">Start a task</button>
<ul id="log"></ul>
<script>
const session = "s-" + Math.random().toString(16).slice(2);
const log = (t) => { const li = document.createElement("li"); li.textContent = t; document.getElementById("log").prepend(li); };
const es = new EventSource("/events?session=" + session);
es.addEventListener("completion", (e) => {
  const c = JSON.parse(e.data);
  log(c.task_id + (c.success ? " finished: " + JSON.stringify(c.result) : " failed: " + c.error));
});
document.getElementById("start").onclick = async () => {
  const r = await fetch("/tasks?session=" + session, {method: "POST"});
  const t = await r.json();
  log(t.TaskID + " started");
};
</script>
`
