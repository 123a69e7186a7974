package redisregistry_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/redisregistry"
)

// A Registry reads tasks a Python service registered, and registers
// its own in the same layout.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	// What the Python service writes when it starts a task.
	rdb.HSet(ctx, "chat:task:meta:task-1", map[string]any{
		"task_id": "task-1", "session_id": "session-1", "user_id": "user-1",
		"tool_call_id": "call-1", "tool_name": "build_agent", "operation_id": "op-1",
		"status": "running", "created_at": "2026-11-28T01:02:03.456789+00:00",
	})
	rdb.Expire(ctx, "chat:task:meta:task-1", time.Hour)
	rdb.Set(ctx, "chat:task:op:op-1", "task-1", time.Hour)

	reg, err := redisregistry.New(rdb, redisregistry.Config{})
	if err != nil {
		panic(err)
	}
	task, err := reg.LookupTask(ctx, "op-1", "")
	if err != nil {
		panic(err)
	}
	fmt.Println(task.TaskID, task.SessionID, task.ToolName, task.Status)

	moved, err := reg.Complete(ctx, "task-1") // running -> completed, atomically
	fmt.Println(moved, err)
	// Output:
	// task-1 session-1 build_agent running
	// true <nil>
}
