package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// The simulated operations. A real service hands the work to another
// service, which calls completion.Publish when it is done (and may report
// progress on the task's stream). Here both steps are scheduled in Redis
// when the task starts, in sorted sets by due time, and every pod's
// scheduler takes what is due: an operation outlives the pod that started
// it, as a real one running elsewhere would.
const (
	completionsDue = "{apiserver}:due:completions" // members: completions' JSON
	progressDue    = "{apiserver}:due:progress"    // members: progressStep JSON
)

//go:embed ops.lua
var opsSrc string

var opsScript = redis.NewScript(opsSrc)

// progressStep is a progress event due for a task's stream.
type progressStep struct {
	TaskID string          `json:"task_id"`
	Event  json.RawMessage `json:"event"`
}

// startOperation writes the task's first event and schedules its progress
// event and its completion in op-min..op-max: three in four succeed.
func (s *server) startOperation(ctx context.Context, task completion.Task) error {
	if _, err := s.streams.Append(ctx, task.TaskID, json.RawMessage(`{"type":"start","messageId":"msg-`+task.TaskID+`"}`)); err != nil {
		return err
	}
	msg := completion.Message{OperationID: task.OperationID, TaskID: task.TaskID, Success: rand.IntN(4) > 0}
	if msg.Success {
		msg.Result, _ = completion.ObjectResult(map[string]any{"words": rand.IntN(1000)})
	} else {
		msg.Error = "the operation failed (simulated)"
	}
	data, err := msg.MarshalJSON()
	if err != nil {
		return err
	}
	d := s.opts.opMin
	if span := s.opts.opMax - s.opts.opMin; span > 0 {
		d += rand.N(span)
	}
	now := time.Now()
	progress, _ := json.Marshal(progressStep{TaskID: task.TaskID, Event: json.RawMessage(`{"type":"data-progress","data":{"percent":50}}`)})
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, progressDue, redis.Z{Score: float64(now.Add(d / 2).UnixMilli()), Member: progress})
		p.ZAdd(ctx, completionsDue, redis.Z{Score: float64(now.Add(d).UnixMilli()), Member: data})
		return nil
	})
	return err
}

// schedule takes due steps every 50ms until ctx ends: progress events go to
// their task's stream, completions to the completion stream (for whichever
// pod's consumer).
func (s *server) schedule(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Progress first: a completion due in the same tick comes after.
		now := time.Now().UnixMilli()
		steps, err := opsScript.Run(ctx, s.rdb, []string{progressDue}, now, 100).StringSlice()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("take due progress events", "err", err)
		}
		for _, raw := range steps {
			var st progressStep
			if json.Unmarshal([]byte(raw), &st) != nil {
				continue
			}
			if _, err := s.streams.Append(ctx, st.TaskID, st.Event); err != nil {
				s.log.Warn("append a progress event", "task_id", st.TaskID, "err", err)
			}
		}
		if err := opsScript.Run(ctx, s.rdb, []string{completionsDue, completionStream}, now, 100).Err(); err != nil && ctx.Err() == nil {
			s.log.Warn("publish due completions", "err", err)
		}
	}
}
