// Command quickstart shows the whole path of a completion, with two "pods"
// in one process: pod A consumes the completion stream and its ready
// handler writes each operation's outcome to its task's stream; pod B,
// where the browser (or a Go caller) waits, hears the outcome from that
// stream. It publishes three completions: a success, a failure, and one for
// a task nobody registered, which ends up in the dead-letter stream. It
// uses the Redis at REDIS_ADDR, or an embedded miniredis when REDIS_ADDR is
// unset, touches only keys of its own, and exits by itself.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
	"github.com/streamrelay/completion/taskstream"
)

func main() {
	if err := run(os.Stdout, os.Getenv("REDIS_ADDR")); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run runs the example against the Redis at addr (embedded when empty),
// printing to out.
func run(out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		addr = mr.Addr()
		fmt.Fprintln(out, "redis: embedded miniredis (set REDIS_ADDR to use a real server)")
	} else {
		fmt.Fprintln(out, "redis:", addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	// Keys of our own, so that a shared Redis is left as it was.
	ns := fmt.Sprintf("quickstart:%d:", time.Now().UnixNano())
	stream := ns + "completions"
	defer cleanUp(rdb, ns)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	// Shared by every pod, in Redis: the tasks and their streams (the
	// Python service's layout, under our prefix).
	registry, err := redisregistry.New(rdb, redisregistry.Config{MetaPrefix: ns + "meta:", OpPrefix: ns + "op:"})
	if err != nil {
		return err
	}
	streams, err := taskstream.New(rdb, taskstream.Config{Prefix: ns + "stream:", ChannelPrefix: ns + "pubsub:"})
	if err != nil {
		return err
	}
	for _, t := range []completion.Task{
		{TaskID: "task-1", SessionID: "session-a", ToolCallID: "call-1", ToolName: "render", OperationID: "op-render"},
		{TaskID: "task-2", SessionID: "session-b", ToolCallID: "call-2", ToolName: "pay", OperationID: "op-payment"},
	} {
		if err := registry.Register(ctx, t); err != nil {
			return err
		}
	}

	// Pod A: the consumer, with the ready handler.
	handler, err := taskstream.NewHandler(streams, registry, taskstream.HandlerConfig{Logger: quiet})
	if err != nil {
		return err
	}
	consumer, err := completion.NewConsumer(rdb, registry, handler, completion.Config{
		Stream: stream,
		Block:  200 * time.Millisecond, // short, so that the example stops quickly on miniredis
		Logger: quiet,
	})
	if err != nil {
		return err
	}
	// Pod B: one hub serves every browser connected to this pod.
	hub, err := taskstream.NewHub(streams, taskstream.HubConfig{Logger: quiet})
	if err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 2)
	go func() { done <- consumer.Run(runCtx) }()
	go func() { done <- hub.Run(runCtx) }()

	// A browser on pod B follows task-1, as the SSE handler would.
	sub, err := hub.Subscribe(ctx, "task-1", "0-0")
	if err != nil {
		return err
	}
	defer sub.Close()

	if err := publish(ctx, out, rdb, stream); err != nil {
		return err
	}
	if err := listen(ctx, out, sub, hub, registry); err != nil {
		return err
	}
	for consumer.Stats().DeadLettered < 1 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for the dead letter")
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			return err
		}
	}
	return report(ctx, out, rdb, consumer, completion.DeadLetterStreamFor(stream))
}

// publish is the producer's side: another service, or another pod.
func publish(ctx context.Context, out io.Writer, rdb *redis.Client, stream string) error {
	result, err := completion.ObjectResult(map[string]any{"pages": 3, "url": "https://example.com/r/1?a=1&b=2"})
	if err != nil {
		return err
	}
	for _, m := range []completion.Message{
		{OperationID: "op-render", TaskID: "task-1", Success: true, Result: result},
		{OperationID: "op-payment", TaskID: "task-2", Success: false, Error: "card declined"},
		{OperationID: "op-unknown", TaskID: "task-9", Success: true},
	} {
		if _, err := completion.Publish(ctx, rdb, stream, m); err != nil {
			return err
		}
		fmt.Fprintf(out, "published: %s (success=%v)\n", m.OperationID, m.Success)
	}
	return nil
}

// listen prints what pod B hears: task-1's events until its finish event,
// then the outcome of op-payment, awaited as a Go caller would.
func listen(ctx context.Context, out io.Writer, sub *taskstream.Subscription, hub *taskstream.Hub, registry *redisregistry.Registry) error {
	for {
		ev, err := sub.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "pod B, task-1's stream: %s\n", ev.Data)
	}
	outcome, err := hub.AwaitOperation(ctx, registry, "op-payment")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pod B, awaited op-payment: success=%v error=%q\n", outcome.Success, outcome.ErrorText)
	return nil
}

// report prints the dead letter and the consumer's counters.
func report(ctx context.Context, out io.Writer, rdb *redis.Client, consumer *completion.Consumer, deadLetters string) error {
	dead, err := rdb.XRange(ctx, deadLetters, "-", "+").Result()
	if err != nil {
		return err
	}
	for _, d := range dead {
		fmt.Fprintf(out, "dead-lettered: reason %s, error %q\n", d.Values[completion.DeadLetterReasonField], d.Values[completion.DeadLetterErrorField])
	}
	st := consumer.Stats()
	fmt.Fprintf(out, "stopped cleanly: handled=%d dead_lettered=%d in_flight=%d\n", st.Handled, st.DeadLettered, st.InFlight)
	return nil
}

// cleanUp deletes the example's keys.
func cleanUp(rdb *redis.Client, ns string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, ns+"*", 100).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	keys = append(keys, completion.DeadLetterStreamFor(ns+"completions"))
	rdb.Del(ctx, keys...)
}
