package inspect_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// A consumer dead-letters completions of tasks its registry does not know
// yet, and an entry that is no message. The inspector counts the dead
// letters by reason, lists those of one reason, redrives them once the
// tasks are known, and purges the rest.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	const stream = "chat:completions"
	for _, task := range []string{"t-1", "t-2"} {
		msg := completion.Message{OperationID: "op-" + task, TaskID: task, Success: true}
		if _, err := completion.Publish(ctx, rdb, stream, msg); err != nil {
			panic(err)
		}
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{completion.DataField, "not json"}}).Err(); err != nil {
		panic(err)
	}

	// The consumer: its registry knows no task yet.
	reg := &completion.MemoryRegistry{}
	handled := make(chan string, 2)
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		handled <- c.Message.OperationID
		return nil
	})
	deadLettered := make(chan struct{}, 3)
	observer := completion.ObserverFunc(func(e completion.Event) {
		if e.Kind == completion.EventDeadLettered {
			deadLettered <- struct{}{}
		}
	})
	c, err := completion.NewConsumer(rdb, reg, handler, completion.Config{
		Stream: stream, Block: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Observer: observer,
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { stop(); <-done }()

	in, err := inspect.New(rdb, inspect.Config{Stream: stream})
	if err != nil {
		panic(err)
	}
	for range 3 {
		<-deadLettered
	}

	reasons, err := in.DeadLetterReasons(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("task_not_found:", reasons[completion.ReasonTaskNotFound])
	fmt.Println("malformed:", reasons[completion.ReasonMalformed])

	page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Reason: completion.ReasonTaskNotFound})
	if err != nil {
		panic(err)
	}
	var ops []string
	for _, dl := range page.DeadLetters {
		ops = append(ops, dl.Message.OperationID)
	}
	slices.Sort(ops)
	fmt.Println("unknown tasks:", ops)

	// The tasks are known now: redrive their completions.
	for _, task := range []string{"t-1", "t-2"} {
		reg.Register(completion.Task{TaskID: task, SessionID: "s", ToolCallID: "tc", OperationID: "op-" + task})
	}
	n, err := in.RedriveReason(ctx, completion.ReasonTaskNotFound)
	if err != nil {
		panic(err)
	}
	fmt.Println("redriven:", n)
	got := []string{<-handled, <-handled}
	slices.Sort(got)
	fmt.Println("handled:", got)

	// What cannot be handled is deleted.
	n, err = in.PurgeAll(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("purged:", n)
	// Output:
	// task_not_found: 2
	// malformed: 1
	// unknown tasks: [op-t-1 op-t-2]
	// redriven: 2
	// handled: [op-t-1 op-t-2]
	// purged: 1
}
