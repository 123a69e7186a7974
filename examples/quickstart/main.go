// Command quickstart publishes three completions and consumes them: one
// success, one failure, and one for a task nobody registered, which ends up
// in the dead-letter stream. It uses the Redis at REDIS_ADDR, or an embedded
// miniredis when REDIS_ADDR is unset, and exits by itself.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		addr = mr.Addr()
		fmt.Println("redis: embedded miniredis (set REDIS_ADDR to use a real server)")
	} else {
		fmt.Println("redis:", addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	// A stream of our own, so that a shared Redis is left as it was.
	stream := fmt.Sprintf("quickstart:%d:completions", time.Now().UnixNano())
	deadLetters := completion.DeadLetterStreamFor(stream)
	defer rdb.Del(context.Background(), stream, deadLetters)

	// The tasks this service started. In production, a Redis-backed
	// registry shared by all pods.
	reg := &completion.MemoryRegistry{}
	reg.Register(completion.Task{TaskID: "task-1", SessionID: "session-a", ToolCallID: "call-1", OperationID: "op-render"})
	reg.Register(completion.Task{TaskID: "task-2", SessionID: "session-b", ToolCallID: "call-2", OperationID: "op-payment"})

	done := make(chan struct{}, 3)
	handler := completion.ByOutcome{
		Success: func(ctx context.Context, task completion.Task, result json.RawMessage) error {
			fmt.Printf("handled: %s succeeded for session %s, result %s\n", task.TaskID, task.SessionID, result)
			done <- struct{}{}
			return nil
		},
		Failure: func(ctx context.Context, task completion.Task, errText string) error {
			fmt.Printf("handled: %s failed for session %s, error %q\n", task.TaskID, task.SessionID, errText)
			done <- struct{}{}
			return nil
		},
	}

	consumer, err := completion.NewConsumer(rdb, reg, handler, completion.Config{
		Stream: stream,
		Block:  200 * time.Millisecond, // short, so that the example stops quickly on miniredis
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return err
	}

	// The producer side: another service, or another pod.
	result, err := completion.ObjectResult(map[string]any{"pages": 3, "url": "https://example.com/r/1?a=1&b=2"})
	if err != nil {
		return err
	}
	msgs := []completion.Message{
		{OperationID: "op-render", TaskID: "task-1", Success: true, Result: result},
		{OperationID: "op-payment", TaskID: "task-2", Success: false, Error: "card declined"},
		{OperationID: "op-unknown", TaskID: "task-9", Success: true},
	}
	for _, m := range msgs {
		if _, err := completion.Publish(ctx, rdb, stream, m); err != nil {
			return err
		}
		fmt.Printf("published: %s (success=%v)\n", m.OperationID, m.Success)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- consumer.Run(runCtx) }()

	// Wait for two handled completions and one dead letter.
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for completions")
		}
	}
	for consumer.Stats().DeadLettered < 1 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for the dead letter")
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if err := <-runErr; err != nil {
		return err
	}

	dead, err := rdb.XRange(ctx, deadLetters, "-", "+").Result()
	if err != nil {
		return err
	}
	for _, d := range dead {
		fmt.Printf("dead-lettered: reason %s, error %q\n", d.Values[completion.DeadLetterReasonField], d.Values[completion.DeadLetterErrorField])
	}
	st := consumer.Stats()
	fmt.Printf("stopped cleanly: succeeded=%d dead_lettered=%d in_flight=%d\n", st.Handled, st.DeadLettered, st.InFlight)
	return nil
}
