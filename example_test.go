package completion_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// The whole round trip: a producer publishes a completion, a consumer finds
// the task and hands the result to the handler.
func Example() {
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
		fmt.Printf("%s for session %s: success=%v result=%s\n",
			c.Message.OperationID, c.Task.SessionID, c.Message.Success, c.Message.Result)
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

	_, err = completion.Publish(ctx, rdb, completion.DefaultStream, completion.Message{
		OperationID: "op-1",
		TaskID:      "task-1",
		Success:     true,
		Result:      json.RawMessage(`{"pages":3}`),
	})
	if err != nil {
		panic(err)
	}
	<-handled
	cancel()
	fmt.Println("Run returned:", <-done)
	// Output:
	// op-1 for session session-1: success=true result={"pages":3}
	// Run returned: <nil>
}

// Publish writes the bytes the Python producer writes for the same values.
func ExampleMessage_MarshalJSON() {
	m := completion.Message{OperationID: "op-7", TaskID: "task-7", Success: false, Error: "render timed out"}
	b, err := m.MarshalJSON()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
	// Output:
	// {"operation_id":"op-7","task_id":"task-7","success":false,"result":null,"error":"render timed out"}
}

// A handler marks an error that retrying cannot fix as permanent: the
// entry goes to the dead-letter stream at once instead of being retried.
func ExamplePermanent() {
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		var out struct{ Pages int }
		if err := json.Unmarshal(c.Message.Result, &out); err != nil {
			return completion.Permanent(fmt.Errorf("result is not a render result: %w", err))
		}
		return nil
	})
	err := handler.HandleCompletion(context.Background(), &completion.Completion{
		Message: completion.Message{Success: true, Result: json.RawMessage(`"oops"`)},
	})
	fmt.Println(completion.IsPermanent(err))
	// Output:
	// true
}

// ByOutcome splits successes from failures, as the Python service does.
func ExampleByOutcome() {
	h := completion.ByOutcome{
		Success: func(ctx context.Context, task completion.Task, result json.RawMessage) error {
			fmt.Println("success:", task.TaskID, string(result))
			return nil
		},
		Failure: func(ctx context.Context, task completion.Task, errText string) error {
			fmt.Println("failure:", task.TaskID, errText)
			return nil
		},
	}
	task := completion.Task{TaskID: "task-1"}
	_ = h.HandleCompletion(context.Background(), &completion.Completion{Task: task, Message: completion.Message{Success: true, Result: completion.StringResult("ok")}})
	_ = h.HandleCompletion(context.Background(), &completion.Completion{Task: task, Message: completion.Message{Error: "card declined"}})
	// Output:
	// success: task-1 "ok"
	// failure: task-1 card declined
}
