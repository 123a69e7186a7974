package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestPublishTest(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		msg := completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: completion.StringResult("<ok>")}
		id, err := in.PublishTest(ctx, msg, completion.WithField("traceparent", "tp"))
		require.NoError(t, err)
		got, err := b.Client.XRange(ctx, stream, id, id).Result()
		require.NoError(t, err)
		require.Len(t, got, 1)
		want, err := msg.MarshalJSON()
		require.NoError(t, err)
		assert.Equal(t, string(want), got[0].Values[completion.DataField])
		assert.Equal(t, "tp", got[0].Values["traceparent"])

		e, ok, err := in.Entry(ctx, id)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, map[string]string{completion.DataField: string(want), "traceparent": "tp"}, e.Fields)
		require.NotNil(t, e.Message)
		assert.Equal(t, "op-1", e.Message.OperationID)

		_, err = in.PublishTest(ctx, completion.Message{TaskID: "t-1"})
		assert.ErrorIs(t, err, completion.ErrMalformed)
	})
}

func TestTail(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		first := publish(t, b.Client, stream, completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		_, err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"other", "x"}}).Result()
		require.NoError(t, err)

		// From "0": what is there, then what comes; fn's error ends it.
		errEnough := errors.New("enough")
		var got []inspect.Entry
		done := make(chan error, 1)
		go func() {
			done <- in.Tail(ctx, "0", func(e inspect.Entry) error {
				got = append(got, e)
				if len(got) == 3 {
					return errEnough
				}
				return nil
			})
		}()
		publish(t, b.Client, stream, completion.Message{OperationID: "op-2", TaskID: "t-2", Success: false, Error: "boom"})
		select {
		case err := <-done:
			require.ErrorIs(t, err, errEnough)
		case <-time.After(10 * time.Second):
			t.Fatal("Tail did not return")
		}
		require.Len(t, got, 3)
		assert.Equal(t, first, got[0].ID)
		assert.Equal(t, first, got[0].Ref)
		assert.Equal(t, stream, got[0].Stream)
		assert.Equal(t, "op-1", got[0].Message.OperationID)
		assert.Nil(t, got[1].Message)
		assert.ErrorIs(t, got[1].DecodeErr, completion.ErrMalformed)
		assert.Equal(t, map[string]string{"other": "x"}, got[1].Fields)
		assert.Equal(t, "op-2", got[2].Message.OperationID)
		assert.Equal(t, "boom", got[2].Message.Error)

		// From an id: only what follows it.
		got = nil
		err = in.Tail(ctx, first, func(e inspect.Entry) error {
			got = append(got, e)
			if len(got) == 2 {
				return errEnough
			}
			return nil
		})
		require.ErrorIs(t, err, errEnough)
		assert.Nil(t, got[0].Message)
		assert.Equal(t, "op-2", got[1].Message.OperationID)

		// From "$": only new entries; ends with nil when ctx ends.
		tctx, cancel := context.WithCancel(ctx)
		defer cancel()
		seen := make(chan inspect.Entry, 100)
		go func() {
			done <- in.Tail(tctx, "$", func(e inspect.Entry) error { seen <- e; return nil })
		}()
		var live inspect.Entry
		for i := 0; live.ID == ""; i++ {
			publish(t, b.Client, stream, completion.Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: "t", Success: true})
			select {
			case live = <-seen:
			case <-time.After(100 * time.Millisecond):
			}
			require.Less(t, i, 100, "Tail from $ saw nothing")
		}
		assert.True(t, strings.HasPrefix(live.Message.OperationID, "live-"), "Tail from $ delivered an old entry: %+v", live)
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Tail did not return after its context ended")
		}
		assert.ErrorContains(t, in.Tail(ctx, "x", func(inspect.Entry) error { return nil }), "not an id")
	})
}
