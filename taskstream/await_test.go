package taskstream

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestAwait(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		h, err := NewHandler(f.streams, f.registry, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)
		done := f.task(t, "done", "")
		c := pendingCompletion(t, f, done, completion.Message{OperationID: done.OperationID, TaskID: "done", Success: true, Result: completion.StringResult("report.pdf")})
		require.NoError(t, h.HandleCompletion(ctx, c))

		t.Run("outcome written before the call", func(t *testing.T) {
			o, err := f.hub.Await(ctx, "done")
			require.NoError(t, err)
			assert.Equal(t, Outcome{TaskID: "done", OperationID: done.OperationID, EntryID: o.EntryID, Success: true, Output: "report.pdf",
				Event: OutcomeEvent(done, c.Message)}, o)
			o2, err := f.hub.AwaitOperation(ctx, f.registry, done.OperationID)
			require.NoError(t, err)
			assert.Equal(t, o, o2, "a finished task is answered from its stream")
		})
		t.Run("context ends first", func(t *testing.T) {
			f.task(t, "slow", "")
			ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err := f.hub.AwaitOperation(ctx, f.registry, "op-slow")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Eventually(t, func() bool { return f.hub.Stats().Subscriptions == 0 }, 10*time.Second, time.Millisecond)
		})
		t.Run("finished without an outcome", func(t *testing.T) {
			_, err := f.streams.Append(ctx, "empty", json.RawMessage(`{"type":"start"}`))
			require.NoError(t, err)
			_, err = f.streams.Finish(ctx, "empty")
			require.NoError(t, err)
			_, err = f.hub.Await(ctx, "empty")
			require.ErrorIs(t, err, ErrNoOutcome)
		})
		t.Run("completed task whose stream is gone", func(t *testing.T) {
			task := f.task(t, "expired", "")
			_, err := f.registry.Complete(ctx, "expired")
			require.NoError(t, err)
			_, err = f.hub.AwaitOperation(ctx, f.registry, task.OperationID)
			require.ErrorIs(t, err, ErrNoOutcome)
		})
		t.Run("unknown operation", func(t *testing.T) {
			_, err := f.hub.AwaitOperation(ctx, f.registry, "op-nobody")
			require.ErrorIs(t, err, completion.ErrTaskNotFound)
			_, err = f.hub.AwaitOperation(ctx, f.registry, "")
			require.ErrorIs(t, err, completion.ErrTaskNotFound)
		})
		t.Run("error event written by the Python service", func(t *testing.T) {
			f.task(t, "py", "")
			_, err := f.streams.Append(ctx, "py", json.RawMessage(`{"type":"error","errorText":"Operation failed"}`))
			require.NoError(t, err)
			o, err := f.hub.Await(ctx, "py")
			require.NoError(t, err)
			assert.False(t, o.Success)
			assert.Equal(t, "Operation failed", o.ErrorText)
			assert.Empty(t, o.OperationID)
		})
	})
}
