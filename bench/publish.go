package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// fixtures are the tasks every message refers to: message i completes
// operation op-i of task task-i. All are registered, in the completion
// registry and in the plain maps the python-loop rendering looks up.
type fixtures struct {
	mem    *completion.MemoryRegistry
	byOp   map[string]string // operation id -> task id
	byTask map[string]pyTask
}

// pyTask is the part of the Python side's ActiveTask the loop checks.
type pyTask struct {
	TaskID, SessionID, ToolCallID string
}

func newFixtures(n int) *fixtures {
	fx := &fixtures{
		mem:    &completion.MemoryRegistry{},
		byOp:   make(map[string]string, n),
		byTask: make(map[string]pyTask, n),
	}
	for i := range n {
		t := completion.Task{
			TaskID:      taskID(i),
			SessionID:   "session-" + strconv.Itoa(i),
			ToolCallID:  "call-" + strconv.Itoa(i),
			OperationID: opID(i),
		}
		fx.mem.Register(t)
		fx.byOp[t.OperationID] = t.TaskID
		fx.byTask[t.TaskID] = pyTask{TaskID: t.TaskID, SessionID: t.SessionID, ToolCallID: t.ToolCallID}
	}
	return fx
}

func opID(i int) string   { return "op-" + strconv.Itoa(i) }
func taskID(i int) string { return "task-" + strconv.Itoa(i) }

// message returns message i, stamped with the time now.
func message(i int) completion.Message {
	return completion.Message{
		OperationID: opID(i),
		TaskID:      taskID(i),
		Success:     true,
		Result:      json.RawMessage(resultJSON(time.Now())),
	}
}

// watermillValues lays message i out as watermill-redisstream's default
// unmarshaller expects it: a UUID field and the same JSON as the payload.
func watermillValues(i int) ([]any, error) {
	m := message(i)
	payload, err := m.AppendJSON(nil)
	if err != nil {
		return nil, err
	}
	return []any{"_watermill_message_uuid", "wm-" + strconv.Itoa(i), "payload", string(payload)}, nil
}

// publishBacklog adds n messages to the session's stream, in pipelines.
func (b *bench) publishBacklog(ctx context.Context, s *session, f wireFormat, n int) error {
	const per = 1000
	for first := 0; first < n; first += per {
		last := min(n, first+per)
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := first; i < last; i++ {
				if err := b.publishOne(ctx, pipeXAdder{p}, s, f, i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("publish backlog: %w", err)
		}
	}
	if got, err := b.rdb.XLen(ctx, s.stream).Result(); err != nil || got != int64(n) {
		return fmt.Errorf("publish backlog: the stream holds %d entries, want %d (%v)", got, n, err)
	}
	return nil
}

// publishPaced publishes total messages one at a time, message i due at
// i/rate seconds after the start; a late publisher catches up.
func (b *bench) publishPaced(ctx context.Context, s *session, f wireFormat, total int) error {
	interval := time.Second / time.Duration(b.opts.rate)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := b.publishOne(ctx, b.rdb, s, f, i); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	if rate := float64(total) / time.Since(start).Seconds(); rate < 0.95*float64(b.opts.rate) {
		fmt.Fprintf(os.Stderr, "warning: the publisher reached only %.0f msgs/s of %d\n", rate, b.opts.rate)
	}
	return nil
}

func (b *bench) publishOne(ctx context.Context, x completion.XAdder, s *session, f wireFormat, i int) error {
	if s.tasks > 0 {
		i %= s.tasks
	}
	if f == formatWatermill {
		vals, err := watermillValues(i)
		if err != nil {
			return err
		}
		return x.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, Values: vals}).Err()
	}
	_, err := completion.Publish(ctx, x, s.stream, message(i), completion.WithMaxLen(0))
	return err
}

// pipeXAdder queues XADDs on a pipeline. completion.Publish passes XAdd a
// pooled buffer and reuses it as soon as XAdd returns, while a pipeline
// writes its commands only at Exec: copy []byte values first.
type pipeXAdder struct{ p redis.Pipeliner }

func (x pipeXAdder) XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd {
	if vals, ok := a.Values.([]any); ok {
		for i, v := range vals {
			if bs, ok := v.([]byte); ok {
				vals[i] = string(bs)
			}
		}
	}
	return x.p.XAdd(ctx, a)
}
