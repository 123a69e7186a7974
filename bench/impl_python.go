package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Python consumer's constants (completion_consumer.py and its config).
const (
	pyMaxRetries   = 10
	pyRetryDelay   = 5 * time.Second
	pyBlockTimeout = 5000 * time.Millisecond
	pyClaimMinIdle = 60000 * time.Millisecond
	pyCount        = 10
)

// runPythonLoop is ChatCompletionConsumer rendered call for call: start()
// creates the group, _consume_messages loops XAUTOCLAIM from 0-0 then
// XREADGROUP COUNT 10 BLOCK 5000, and _process_entry decodes, looks the
// task up, calls the handler and sends one XACK per entry. The Python
// side's per-message log lines are left out.
func runPythonLoop(ctx context.Context, e *env) error {
	// start()
	err := e.rdb.XGroupCreateMkStream(ctx, e.stream, e.group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	// _consume_messages()
	for retry := 0; ctx.Err() == nil && retry < pyMaxRetries; {
		err := pyConsume(ctx, e, &retry)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		retry++
		e.log.Error("consumer error", slog.Int("retry", retry), slog.Any("err", err))
		if retry < pyMaxRetries {
			select {
			case <-ctx.Done():
			case <-time.After(pyRetryDelay):
			}
		}
	}
	return nil
}

// pyConsume is the inner `while self._running` loop. It returns nil when
// stopped and the error that broke it otherwise.
func pyConsume(ctx context.Context, e *env, retry *int) error {
	*retry = 0
	for ctx.Err() == nil {
		claimed, _, err := e.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: e.stream, Group: e.group, Consumer: e.consumer,
			MinIdle: pyClaimMinIdle, Start: "0-0", Count: pyCount,
		}).Result()
		if err != nil {
			e.log.Warn("XAUTOCLAIM failed (non-fatal)", slog.Any("err", err))
		}
		for _, m := range claimed {
			if ctx.Err() != nil {
				return nil
			}
			pyProcessEntry(ctx, e, m)
		}

		streams, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: e.group, Consumer: e.consumer,
			Streams: []string{e.stream, ">"},
			Block:   pyBlockTimeout, Count: pyCount,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return err
		}
		for _, st := range streams {
			for _, m := range st.Messages {
				if ctx.Err() != nil {
					return nil
				}
				pyProcessEntry(ctx, e, m)
			}
		}
	}
	return nil
}

// pyProcessEntry is _process_entry: handle, then XACK the one entry.
func pyProcessEntry(ctx context.Context, e *env, m redis.XMessage) {
	if data, ok := m.Values["data"].(string); ok && data != "" {
		pyHandleMessage(e, []byte(data)) // message_data.encode()
	}
	if err := e.rdb.XAck(ctx, e.stream, e.group, m.ID).Err(); err != nil {
		e.log.Error("error processing completion message", slog.String("id", m.ID), slog.Any("err", err))
	}
}

// pyHandleMessage is _handle_message: decode, find the task by operation id
// then by task id, check its fields, and call the success or failure
// handler.
func pyHandleMessage(e *env, body []byte) {
	// OperationCompleteMessage.model_validate_json: decoded with the
	// decoder every implementation uses here (see decodeEntry), so that
	// the comparison is of the loops.
	msg, err := decodeBytes(body)
	if err != nil {
		e.log.Error("failed to parse completion message", slog.Any("err", err))
		return
	}
	task, ok := e.fx.byTask[e.fx.byOp[msg.OperationID]]
	if !ok {
		task, ok = e.fx.byTask[msg.TaskID]
	}
	if !ok {
		e.log.Warn("task not found", slog.String("operation_id", msg.OperationID))
		return
	}
	if task.TaskID == "" || task.SessionID == "" || task.ToolCallID == "" {
		e.log.Error("task has empty critical fields")
		return
	}
	// process_operation_success(task, message.result) or
	// process_operation_failure(task, message.error): the handler work every
	// implementation does, on the result's JSON.
	if err := e.work(msg.Result); err != nil {
		e.log.Error("handler failed", slog.Any("err", err))
	}
}
