// Command apiserver is an API server in the shape of the Python service
// this library replaces, correct with any number of pods: browsers start
// long-running tasks on one pod and watch them finish over Server-Sent
// Events on any pod, also after a reconnect to another one.
//
//	go run ./examples/apiserver            # embedded miniredis unless REDIS_ADDR is set
//	open http://localhost:8080/
//
//	REDIS_ADDR=localhost:6379 go run ./examples/apiserver -addr :8081 &
//	REDIS_ADDR=localhost:6379 go run ./examples/apiserver -addr :8082 &   # as many pods as you like
//
// Endpoints:
//
//	GET  /                           a page that starts tasks and shows their completions
//	POST /tasks?session=S&user=U     registers a task, starts a (simulated) operation, answers {"task_id":…,"operation_id":…}
//	GET  /tasks/{task_id}/events?user=U   Server-Sent Events of the task's stream (Last-Event-ID resumes)
//	GET  /healthz                    200 while the consumer and the hub run, 503 otherwise
//
// Every pod shares everything through Redis, in the Python service's
// layout: the task registry (redisregistry: chat:task:meta:<id>,
// chat:task:op:<id>), the completion stream every pod's consumer reads
// (one group: each completion is handled by one pod), and the per-task
// streams (taskstream: chat:stream:<id>, announced on
// chat:task:pubsub:<id>). The consumer's handler is taskstream's ready
// one: it appends the outcome and the finish event to the task's stream and
// marks the task completed or failed, atomically. Each pod's hub follows the
// streams its browsers watch, whichever pod wrote them.
//
// The simulated operations write a start event and, half way, a progress
// event to their task's stream, then publish their completion. They are
// scheduled in Redis (sorted sets by due time, taken by whichever pod's
// scheduler sees them due), so an operation outlives the pod that started
// it.
//
// SIGTERM or Ctrl-C shuts down gracefully: the event streams end (browsers
// reconnect, to another pod behind a load balancer), then HTTP, then the
// consumer, which finishes running handlers and leaves the rest pending for
// other pods.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
	"github.com/streamrelay/completion/taskstream"
)

// Key names of the example's own (the task keys are the Python layout's).
const completionStream = "{apiserver}:completions"

// options are the command line's.
type options struct {
	addr         string
	consume      bool
	claimMinIdle time.Duration
	opMin, opMax time.Duration
	retry        time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "localhost:8080", "HTTP listen address")
	flag.BoolVar(&o.consume, "consume", true, "run a consumer of the completion stream (a pod without one only serves HTTP)")
	flag.DurationVar(&o.claimMinIdle, "claim-min-idle", time.Minute, "how long a dead pod's completions wait before another pod takes them (Config.ClaimMinIdle)")
	flag.DurationVar(&o.opMin, "op-min", 500*time.Millisecond, "shortest simulated operation")
	flag.DurationVar(&o.opMax, "op-max", 3*time.Second, "longest simulated operation")
	flag.DurationVar(&o.retry, "retry", time.Second, "reconnection delay the event streams ask browsers for")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	redisAddr := os.Getenv("REDIS_ADDR")
	if redisAddr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			log.Error("start miniredis", "err", err)
			os.Exit(1)
		}
		defer mr.Close()
		redisAddr = mr.Addr()
		log.Info("using an embedded miniredis; set REDIS_ADDR to use a real server (and to run several pods)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	log.Info("listening", "addr", "http://"+ln.Addr().String()+"/")
	if err := run(ctx, rdb, ln, o, log); err != nil {
		log.Error("apiserver stopped", "err", err)
		os.Exit(1)
	}
}

// server holds what the HTTP handlers share.
type server struct {
	rdb      *redis.Client
	registry *redisregistry.Registry
	streams  *taskstream.Streams
	hub      *taskstream.Hub
	consumer *completion.Consumer // nil without -consume
	events   http.Handler         // taskstream's SSE handler
	opts     options
	log      *slog.Logger
}

func newServer(rdb *redis.Client, o options, log *slog.Logger) (*server, error) {
	registry, err := redisregistry.New(rdb, redisregistry.Config{})
	if err != nil {
		return nil, err
	}
	streams, err := taskstream.New(rdb, taskstream.Config{})
	if err != nil {
		return nil, err
	}
	hub, err := taskstream.NewHub(streams, taskstream.HubConfig{Logger: log})
	if err != nil {
		return nil, err
	}
	events, err := taskstream.NewSSEHandler(hub, registry, taskstream.SSEConfig{
		// In a real service: the user of the session cookie or token.
		UserID: func(r *http.Request) string { return r.URL.Query().Get("user") },
		Retry:  o.retry,
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	s := &server{rdb: rdb, registry: registry, streams: streams, hub: hub, events: events, opts: o, log: log}
	if o.consume {
		handler, err := taskstream.NewHandler(streams, registry, taskstream.HandlerConfig{Logger: log})
		if err != nil {
			return nil, err
		}
		s.consumer, err = completion.NewConsumer(rdb, registry, handler, completion.Config{
			Stream:        completionStream,
			Group:         completion.DefaultGroup,
			Block:         time.Second,
			ClaimMinIdle:  o.claimMinIdle,
			ClaimInterval: min(5*time.Second, o.claimMinIdle/2), // the default, or sooner for a short ClaimMinIdle
			Logger:        log,
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// run serves on ln until ctx ends, then shuts down in order.
func run(ctx context.Context, rdb *redis.Client, ln net.Listener, o options, log *slog.Logger) error {
	s, err := newServer(rdb, o, log)
	if err != nil {
		return err
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	hubCtx, stopHub := context.WithCancel(bg)
	defer stopHub()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() {
		if err := s.hub.Run(hubCtx); err != nil {
			errc <- fmt.Errorf("hub: %w", err)
		}
	})
	if s.consumer != nil {
		wg.Go(func() {
			if err := s.consumer.Run(bg); err != nil {
				errc <- fmt.Errorf("consumer: %w", err)
			}
		})
	}
	wg.Go(func() { s.schedule(bg) })

	httpSrv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-httpDone:
	case runErr = <-errc:
	}
	log.Info("shutting down")
	stopHub() // ends the event streams, so that Shutdown need not wait for them
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	stopBG()
	wg.Wait()
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("POST /tasks", s.startTask)
	mux.Handle("GET /tasks/{task_id}/events", s.events)
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// startTask registers a task and schedules a simulated long operation,
// whose completion another service would publish.
func (s *server) startTask(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	session, user := q.Get("session"), q.Get("user")
	if session == "" {
		http.Error(w, "session is required", http.StatusBadRequest)
		return
	}
	id := fmt.Sprintf("%016x", rand.Uint64())
	task := completion.Task{
		TaskID: "task-" + id, SessionID: session, UserID: user,
		ToolCallID: "call-" + id, ToolName: "simulated_operation", OperationID: "op-" + id,
	}
	ctx := r.Context()
	if err := s.registry.Register(ctx, task); err != nil {
		s.log.Error("register task", "err", err)
		http.Error(w, "cannot register the task", http.StatusServiceUnavailable)
		return
	}
	if err := s.startOperation(ctx, task); err != nil {
		s.log.Error("start operation", "task_id", task.TaskID, "err", err)
		http.Error(w, "cannot start the operation", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"task_id": task.TaskID, "operation_id": task.OperationID})
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"hub": s.hub.Stats()}
	ok := s.hub.Running() && s.hub.Connected()
	if s.consumer != nil {
		state := s.consumer.State()
		ok = ok && state == completion.StateRunning
		st := s.consumer.Stats()
		body["consumer"] = map[string]any{"state": state.String(), "handled": st.Handled, "dead_lettered": st.DeadLettered, "last_error": st.LastError}
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

//go:embed page.html
var page []byte
