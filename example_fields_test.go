package completion_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// Metadata travels next to the message, in fields of the stream entry, and
// the handler reads it with Completion.Field. examples/otel carries a W3C
// trace context this way.
func ExampleWithField() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	reg := &completion.MemoryRegistry{}
	reg.Register(completion.Task{TaskID: "task-1", SessionID: "session-1", ToolCallID: "call-1", OperationID: "op-1"})

	handled := make(chan struct{})
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		fmt.Printf("%s: traceparent=%s tenant=%s missing=%q\n",
			c.Message.OperationID, c.Field("traceparent"), c.Field("tenant"), c.Field("missing"))
		close(handled)
		return nil
	})
	consumer, err := completion.NewConsumer(rdb, reg, handler, completion.Config{
		Block:  100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- consumer.Run(ctx) }()

	_, err = completion.Publish(ctx, rdb, completion.DefaultStream,
		completion.Message{OperationID: "op-1", TaskID: "task-1", Success: true},
		completion.WithField("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		completion.WithField("tenant", "acme"),
	)
	if err != nil {
		panic(err)
	}
	<-handled

	// Names the entry format already uses are refused.
	_, err = completion.Publish(ctx, rdb, completion.DefaultStream,
		completion.Message{OperationID: "op-2", TaskID: "task-1", Success: true},
		completion.WithField("dl_reason", "x"))
	fmt.Println(err)

	cancel()
	fmt.Println("Run returned:", <-done)
	// Output:
	// op-1: traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 tenant=acme missing=""
	// completion: malformed message: WithField("dl_reason"): names starting with "dl_" are reserved for dead-letter metadata (nothing was published)
	// Run returned: <nil>
}
