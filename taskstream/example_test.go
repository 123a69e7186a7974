package taskstream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
	"github.com/streamrelay/completion/taskstream"
)

// runHub runs hub until the returned function is called, which waits for
// Run to return. (Subscribe works before Run has started.)
func runHub(hub *taskstream.Hub) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	return func() { cancel(); <-done }
}

// A subscriber gets the stream's events from the id it gives ("0-0": all
// of them), then the live ones, until the finish event.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	streams, err := taskstream.New(rdb, taskstream.Config{}) // the Python layout
	if err != nil {
		panic(err)
	}
	hub, err := taskstream.NewHub(streams, taskstream.HubConfig{})
	if err != nil {
		panic(err)
	}
	defer runHub(hub)()

	_, _ = streams.Append(ctx, "task-1", json.RawMessage(`{"type":"start"}`)) // before the subscriber
	sub, err := hub.Subscribe(ctx, "task-1", "0-0")
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	_, _ = streams.Append(ctx, "task-1", json.RawMessage(`{"type":"data-progress","data":{"percent":50}}`))
	_, _ = streams.Finish(ctx, "task-1")
	for {
		ev, err := sub.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(string(ev.Data))
	}
	// Output:
	// {"type":"start"}
	// {"type":"data-progress","data":{"percent":50}}
	// {"type":"finish"}
}

// The ready handler writes each completion's outcome to its task's stream
// and status; Await hears it on any pod, also after the fact.
func ExampleHandler() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	registry, _ := redisregistry.New(rdb, redisregistry.Config{})
	streams, _ := taskstream.New(rdb, taskstream.Config{})
	hub, _ := taskstream.NewHub(streams, taskstream.HubConfig{Logger: quiet})
	defer runHub(hub)()
	handler, _ := taskstream.NewHandler(streams, registry, taskstream.HandlerConfig{Logger: quiet})
	consumer, err := completion.NewConsumer(rdb, registry, handler, completion.Config{
		Stream: "chat:completions", Logger: quiet,
		Block: 100 * time.Millisecond, // a quick shutdown on miniredis, which cannot interrupt a blocked read
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- consumer.Run(runCtx) }()
	defer func() { stop(); <-done }()

	_ = registry.Register(ctx, completion.Task{TaskID: "task-1", SessionID: "s-1", UserID: "u-1",
		ToolCallID: "call-1", ToolName: "create_agent", OperationID: "op-1"})
	_, _ = completion.Publish(ctx, rdb, "chat:completions", completion.Message{
		OperationID: "op-1", TaskID: "task-1", Success: true, Result: json.RawMessage(`{"agent_id":"a-7"}`)})

	outcome, err := hub.AwaitOperation(ctx, registry, "op-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(outcome.Success, outcome.Output)
	fmt.Println(string(outcome.Event))
	// Output:
	// true {"agent_id":"a-7"}
	// {"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"agent_id\":\"a-7\"}","success":true}
}

// The SSE handler streams a task's events to its owner's browser; an
// EventSource that reconnects sends Last-Event-ID and gets the rest.
func ExampleNewSSEHandler() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	registry, _ := redisregistry.New(rdb, redisregistry.Config{})
	streams, _ := taskstream.New(rdb, taskstream.Config{})
	hub, _ := taskstream.NewHub(streams, taskstream.HubConfig{})
	defer runHub(hub)()
	events, err := taskstream.NewSSEHandler(hub, registry, taskstream.SSEConfig{
		UserID: func(r *http.Request) string { return r.Header.Get("X-User") }, // your session's user
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /tasks/{task_id}/events", events)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	_ = registry.Register(ctx, completion.Task{TaskID: "task-1", SessionID: "s-1", UserID: "u-1", ToolCallID: "call-1", OperationID: "op-1"})
	_, _ = streams.Append(ctx, "task-1", json.RawMessage(`{"type":"error","errorText":"quota exceeded"}`))
	_, _ = streams.Finish(ctx, "task-1")

	for _, user := range []string{"u-2", "u-1"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/tasks/task-1/events", nil)
		req.Header.Set("X-User", user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		fmt.Println(user, resp.Status)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() { // the id: lines carry stream ids, which vary
			if line := sc.Text(); strings.HasPrefix(line, "data:") || strings.HasPrefix(line, "retry:") {
				fmt.Println(line)
			}
		}
		resp.Body.Close()
	}
	// Output:
	// u-2 403 Forbidden
	// u-1 200 OK
	// retry: 3000
	// data: {"type":"error","errorText":"quota exceeded"}
	// data: {"type":"finish"}
}

func ExampleOutcomeEvent() {
	task := completion.Task{TaskID: "task-1", ToolCallID: "call-1", ToolName: "create_agent"}
	fmt.Println(string(taskstream.OutcomeEvent(task, completion.Message{Success: true, Result: json.RawMessage(`{"pages":3}`)})))
	fmt.Println(string(taskstream.OutcomeEvent(task, completion.Message{Success: true, Result: completion.StringResult("done")})))
	fmt.Println(string(taskstream.OutcomeEvent(task, completion.Message{Success: true})))
	fmt.Println(string(taskstream.OutcomeEvent(task, completion.Message{Success: false})))
	// Output:
	// {"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"pages\":3}","success":true}
	// {"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"done","success":true}
	// {"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"status\":\"completed\"}","success":true}
	// {"type":"error","errorText":"Operation failed"}
}
