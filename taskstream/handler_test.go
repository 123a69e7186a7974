package taskstream

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/redisregistry"
)

func TestOutcomeEvent(t *testing.T) {
	task := completion.Task{TaskID: "t-1", ToolCallID: "call-1", ToolName: "create_agent"}
	tests := []struct {
		name string
		msg  completion.Message
		want string
	}{
		{"object result", completion.Message{Success: true, Result: json.RawMessage(`{"b":1,"a":"<é>"}`)},
			`{"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"b\":1,\"a\":\"<é>\"}","success":true}`},
		{"string result", completion.Message{Success: true, Result: completion.StringResult("done & dusted\n")},
			`{"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"done & dusted\n","success":true}`},
		{"null result", completion.Message{Success: true, Result: json.RawMessage(`null`)},
			`{"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"status\":\"completed\"}","success":true}`},
		{"no result", completion.Message{Success: true},
			`{"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"status\":\"completed\"}","success":true}`},
		{"failure", completion.Message{Error: `quota "exceeded"`},
			`{"type":"error","errorText":"quota \"exceeded\""}`},
		{"failure without text", completion.Message{},
			`{"type":"error","errorText":"Operation failed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := OutcomeEvent(task, tt.msg)
			assert.Equal(t, tt.want, string(got))
			assert.True(t, json.Valid(got))
		})
	}
}

// pendingCompletion adds a completion to a stream of the test's own and
// delivers it to a consumer of group "g", as the consumer would before
// calling the handler.
func pendingCompletion(t *testing.T, f *fixture, task completion.Task, msg completion.Message) *completion.Completion {
	t.Helper()
	ctx := context.Background()
	stream := f.prefix + "completions"
	if f.prefix == "" {
		stream = "chat:completions"
	}
	err := f.b.Client.XGroupCreateMkStream(ctx, stream, "g", "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		require.NoError(t, err)
	}
	id, err := completion.Publish(ctx, f.b.Client, stream, msg)
	require.NoError(t, err)
	require.NoError(t, f.b.Client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 100}).Err())
	return &completion.Completion{Task: task, Message: msg, EntryID: id, Stream: stream, Group: "g", Deliveries: 1}
}

func pending(t *testing.T, f *fixture, c *completion.Completion) int64 {
	t.Helper()
	p, err := f.b.Client.XPending(context.Background(), c.Stream, c.Group).Result()
	require.NoError(t, err)
	return p.Count
}

func TestHandlerOneScriptOnOneNode(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)

		for _, success := range []bool{true, false} {
			id := map[bool]string{true: "ok", false: "bad"}[success]
			task := f.task(t, id, "u-1")
			msg := completion.Message{OperationID: task.OperationID, TaskID: id, Success: success, Result: json.RawMessage(`{"pages":3}`), Error: "boom"}
			if success {
				msg.Error = ""
			} else {
				msg.Result = nil
			}
			c := pendingCompletion(t, f, task, msg)
			require.NoError(t, h.HandleCompletion(ctx, c))
			want := [][]string{
				{"data", string(OutcomeEvent(task, msg)), "operation_id", task.OperationID},
				{"data", FinishEvent, "operation_id", task.OperationID},
			}
			assert.Equal(t, want, f.rawEntries(t, id))
			wantStatus := map[bool]string{true: "completed", false: "failed"}[success]
			assert.Equal(t, wantStatus, f.status(t, id))
			assert.Zero(t, pending(t, f, c), "acknowledged by the same script")
			ttl := b.Client.PTTL(ctx, f.streams.Key(id)).Val()
			assert.Greater(t, ttl, 59*time.Minute)

			// A redelivery, or another completion for the finished task:
			// nothing written twice, the status kept.
			again := pendingCompletion(t, f, task, completion.Message{OperationID: task.OperationID, TaskID: id, Success: !success})
			require.NoError(t, h.HandleCompletion(ctx, again))
			assert.Equal(t, want, f.rawEntries(t, id))
			assert.Equal(t, wantStatus, f.status(t, id))
			assert.Zero(t, pending(t, f, again))
		}
	})
}

// Where the writes cannot be one script (Redis Cluster; here forced with
// SeparateWrites), a failure after the events and before the status change
// is retried without writing the events twice.
func TestHandlerSeparateWritesRepeatNothing(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{SeparateWrites: true, Logger: quietLog})
		require.NoError(t, err)
		task := f.task(t, "t-1", "")
		msg := completion.Message{OperationID: task.OperationID, TaskID: "t-1", Success: true, Result: completion.StringResult("done")}
		c := pendingCompletion(t, f, task, msg)

		// The status change fails: the meta hash is of the wrong type.
		meta := f.registry.MetaKey("t-1")
		saved, err := b.Client.HGetAll(ctx, meta).Result()
		require.NoError(t, err)
		require.NoError(t, b.Client.Del(ctx, meta).Err())
		require.NoError(t, b.Client.Set(ctx, meta, "broken", time.Hour).Err())
		err = h.HandleCompletion(ctx, c)
		require.ErrorContains(t, err, "WRONGTYPE")
		assert.Len(t, f.rawEntries(t, "t-1"), 2, "the events come first")
		assert.EqualValues(t, 1, pending(t, f, c), "the handler does not acknowledge on this path")

		// Redelivered once the hash is back: the status is set, the events
		// are not written again.
		require.NoError(t, b.Client.Del(ctx, meta).Err())
		require.NoError(t, b.Client.HSet(ctx, meta, saved).Err())
		require.NoError(t, h.HandleCompletion(ctx, c))
		assert.Equal(t, "completed", f.status(t, "t-1"))
		entries := f.rawEntries(t, "t-1")
		require.Len(t, entries, 2)
		assert.Equal(t, `{"type":"tool-output-available","toolCallId":"call-t-1","toolName":"create_agent","output":"done","success":true}`, entries[0][1])

		// A completion for a task the registry says is completed writes
		// nothing at all.
		task.Status = redisregistry.StatusCompleted
		require.NoError(t, h.HandleCompletion(ctx, &completion.Completion{Task: task, Message: completion.Message{OperationID: "op-2", TaskID: "t-1"}}))
		assert.Len(t, f.rawEntries(t, "t-1"), 2)
	})
}

func TestHandlerUnknownTaskWritesNothing(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)
		task := completion.Task{TaskID: "gone", SessionID: "s", ToolCallID: "c", Status: "running"}
		c := pendingCompletion(t, f, task, completion.Message{OperationID: "op-gone", TaskID: "gone", Success: true})
		require.NoError(t, h.HandleCompletion(context.Background(), c))
		assert.Zero(t, b.Client.Exists(context.Background(), f.streams.Key("gone")).Val(), "no stream for a task that does not exist")
		assert.Zero(t, pending(t, f, c))
	})
}

func TestHandlerMiddleware(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)
		task := f.task(t, "t-1", "")
		c := pendingCompletion(t, f, task, completion.Message{OperationID: task.OperationID, TaskID: "t-1", Success: true})
		failing := completion.Chain(completion.HandlerFunc(func(context.Context, *completion.Completion) error {
			return errors.New("store the result: database down")
		}), h.Middleware())
		require.ErrorContains(t, failing.HandleCompletion(ctx, c), "database down")
		assert.Empty(t, f.rawEntries(t, "t-1"), "nothing told before the wrapped handler succeeded")
		assert.Equal(t, "running", f.status(t, "t-1"))

		var ran bool
		ok := completion.Chain(completion.HandlerFunc(func(context.Context, *completion.Completion) error {
			ran = true
			return nil
		}), h.Middleware())
		require.NoError(t, ok.HandleCompletion(ctx, c))
		assert.True(t, ran)
		assert.Len(t, f.rawEntries(t, "t-1"), 2)
		assert.Equal(t, "completed", f.status(t, "t-1"))
	})
}

func TestNewHandlerNilArguments(t *testing.T) {
	rdb, _ := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	reg, err := redisregistry.New(rdb, redisregistry.Config{})
	require.NoError(t, err)
	_, err = NewHandler(nil, reg, HandlerConfig{})
	require.ErrorIs(t, err, completion.ErrNilArgument)
	_, err = NewHandler(s, nil, HandlerConfig{})
	require.ErrorIs(t, err, completion.ErrNilArgument)
}

// The whole path: a completion published by any producer is consumed, the
// handler writes its outcome, and Await on any pod hears it.
func TestHandlerWithConsumerAndAwait(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)
		stream := f.prefix + "completions"
		consumer, err := completion.NewConsumer(b.Client, f.registry, h, completion.Config{Stream: stream, Block: 100 * time.Millisecond, Logger: quietLog})
		require.NoError(t, err)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- consumer.Run(runCtx) }()
		t.Cleanup(func() { stop(); require.NoError(t, <-done) })

		ok, bad := f.task(t, "ok", ""), f.task(t, "bad", "")
		awaited := make(chan Outcome, 1)
		go func() {
			o, err := f.hub.Await(ctx, "ok") // waiting before the outcome exists
			if err != nil {
				t.Error(err)
			}
			awaited <- o
		}()
		_, err = completion.Publish(ctx, b.Client, stream, completion.Message{OperationID: ok.OperationID, TaskID: "ok", Success: true, Result: json.RawMessage(`{"pages":3}`)})
		require.NoError(t, err)
		_, err = completion.Publish(ctx, b.Client, stream, completion.Message{OperationID: bad.OperationID, TaskID: "bad", Error: "quota exceeded"})
		require.NoError(t, err)

		o := <-awaited
		assert.True(t, o.Success)
		assert.Equal(t, `{"pages":3}`, o.Output)
		assert.Equal(t, ok.OperationID, o.OperationID)
		o, err = f.hub.AwaitOperation(ctx, f.registry, bad.OperationID) // by operation id
		require.NoError(t, err)
		assert.False(t, o.Success)
		assert.Equal(t, "quota exceeded", o.ErrorText)

		require.Eventually(t, func() bool { return f.status(t, "bad") == "failed" }, 10*time.Second, time.Millisecond)
		assert.Equal(t, "completed", f.status(t, "ok"))
		// After the fact, a subscriber replays the stream to its end.
		sub, err := f.hub.Subscribe(ctx, "ok", "")
		require.NoError(t, err)
		evs, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, []string{string(OutcomeEvent(ok, completion.Message{Success: true, Result: json.RawMessage(`{"pages":3}`)})), FinishEvent}, datas(evs))
	})
}
