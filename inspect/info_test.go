package inspect_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestInfoOfMissingStream(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		si, err := in.Info(context.Background())
		require.NoError(t, err)
		assert.Equal(t, inspect.StreamInfo{Stream: stream, DeadLetterStream: completion.DeadLetterStreamFor(stream)}, si)
	})
}

func TestInfoPendingAndDeadLetters(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		cfg := testConfig(stream)
		start := time.Now()
		entries := []poison{
			{values: map[string]any{"other": "x"}, reason: completion.ReasonMalformed},
			{values: map[string]any{completion.DataField: "not json"}, reason: completion.ReasonMalformed},
			unknownTask(1),
			unknownTask(2, "dl_note", "keep me", "orig_note", "me too", "extra", "y"),
		}
		poisonIDs := deadLetterPoison(t, b.Client, cfg, entries)

		// A backlog: 20 entries, of which a consumer that then crashed read
		// the first 5.
		const backlog, read = 20, 5
		var ids []string
		for i := 1; i <= backlog; i++ {
			ids = append(ids, publish(t, b.Client, stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true}))
		}
		_, err := b.Client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "crashed", Streams: []string{stream, ">"}, Count: read, Block: -1}).Result()
		require.NoError(t, err)

		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Group: "g"})

		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.True(t, si.Exists)
		assert.Equal(t, stream, si.Stream)
		assert.Equal(t, int64(len(entries)+backlog), si.Length)
		assert.Equal(t, poisonIDs[0], si.FirstID)
		assert.Equal(t, ids[backlog-1], si.LastID)
		assert.Equal(t, completion.DeadLetterStreamFor(stream), si.DeadLetterStream)
		assert.Equal(t, int64(len(entries)), si.DeadLetterLength)
		assert.Nil(t, si.Partitions)
		assert.Empty(t, si.Owner)
		require.Len(t, si.Groups, 1)
		g, ok := si.Group("g")
		require.True(t, ok)
		_, ok = si.Group("other")
		assert.False(t, ok)
		assert.Equal(t, int64(read), g.Pending)
		assert.Equal(t, ids[read-1], g.LastDeliveredID)
		var crashed *inspect.ConsumerInfo
		for i, c := range g.Consumers {
			if c.Name == "crashed" {
				crashed = &g.Consumers[i]
			}
		}
		require.NotNil(t, crashed, "consumers: %+v", g.Consumers)
		assert.Equal(t, int64(read), crashed.Pending)
		if b.Real { // miniredis reports the stream length as lag, and no idle times
			assert.True(t, g.LagKnown)
			assert.Equal(t, int64(backlog-read), g.Lag)
			assert.Less(t, crashed.Idle, time.Minute)
		}

		pending, err := in.Pending(ctx, inspect.PendingQuery{})
		require.NoError(t, err)
		require.Len(t, pending, read)
		for i, p := range pending {
			assert.Equal(t, ids[i], p.ID)
			assert.Equal(t, ids[i], p.Ref, "an unpartitioned stream's Ref is the id")
			assert.Equal(t, stream, p.Stream)
			assert.Zero(t, p.Partition)
			assert.Equal(t, "crashed", p.Consumer)
			assert.Equal(t, int64(1), p.Deliveries)
			assert.GreaterOrEqual(t, p.Idle, time.Duration(0))
		}
		pending, err = in.Pending(ctx, inspect.PendingQuery{Group: "g", Count: 2})
		require.NoError(t, err)
		assert.Len(t, pending, 2)
		_, err = in.Pending(ctx, inspect.PendingQuery{Group: "no-such-group"})
		assert.ErrorContains(t, err, "NOGROUP")
		_, err = in.Pending(ctx, inspect.PendingQuery{Count: -1})
		assert.ErrorContains(t, err, "count is -1")

		page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{})
		require.NoError(t, err)
		assert.Empty(t, page.Next)
		dls := page.DeadLetters
		require.Len(t, dls, len(entries))
		bySource := map[string]int{}
		for i, id := range poisonIDs {
			bySource[id] = i
		}
		for _, dl := range dls {
			i, ok := bySource[dl.SourceID]
			require.True(t, ok, "dead letter of an unknown source id: %+v", dl)
			e := entries[i]
			assert.Equal(t, dl.ID, dl.Ref)
			assert.Equal(t, completion.DeadLetterStreamFor(stream), dl.DeadLetterStream)
			assert.Zero(t, dl.Partition)
			assert.Equal(t, e.reason, dl.Reason, "entry %d", i)
			assert.Equal(t, stringValues(e.values), dl.Fields, "entry %d: original fields, with their own names", i)
			assert.True(t, dl.Redrivable())
			assert.Zero(t, dl.Size)
			assert.Zero(t, dl.FieldCount)
			assert.Empty(t, dl.Excerpt)
			assert.Equal(t, int64(1), dl.Deliveries)
			assert.Equal(t, "c1", dl.Consumer)
			assert.Equal(t, "g", dl.Group)
			assert.Equal(t, stream, dl.Stream)
			assert.NotEmpty(t, dl.Error)
			assert.WithinRange(t, dl.Time, start.Add(-time.Second), time.Now().Add(time.Second))
			if e.op == "" {
				assert.Nil(t, dl.Message)
				assert.ErrorIs(t, dl.DecodeErr, completion.ErrMalformed)
				continue
			}
			require.NotNil(t, dl.Message, "entry %d: %v", i, dl.DecodeErr)
			assert.NoError(t, dl.DecodeErr)
			assert.Equal(t, e.op, dl.Message.OperationID)
			assert.True(t, dl.Message.Success)
		}

		// Paging with an exclusive start.
		assertPagesDeadLetters(t, in, dls, func(dl inspect.DeadLetter) string { return dl.ID })
	})
}
