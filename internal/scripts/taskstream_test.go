package scripts_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/scripts"
)

const (
	outcomeJSON = `{"type":"tool-output-available","toolCallId":"call-1","toolName":"t","output":"x","success":true}`
	finishJSON  = `{"type":"finish"}`
)

// listen subscribes to channel and returns a function that waits for the
// next message's payload.
func listen(t *testing.T, rdb *redis.Client, channel string) func() string {
	t.Helper()
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, channel)
	t.Cleanup(func() { _ = ps.Close() })
	_, err := ps.ReceiveTimeout(ctx, 5*time.Second) // the subscription's confirmation
	require.NoError(t, err)
	return func() string {
		t.Helper()
		m, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		require.NoError(t, err)
		msg, ok := m.(*redis.Message)
		require.True(t, ok, "got %T, want a message", m)
		return msg.Payload
	}
}

// entries reads a stream's entries as field lists.
func entries(t *testing.T, rdb *redis.Client, stream string) [][]string {
	t.Helper()
	res, err := rdb.Do(context.Background(), "XRANGE", stream, "-", "+").Slice()
	require.NoError(t, err)
	var out [][]string
	for _, e := range res {
		var fields []string
		for _, v := range e.([]any)[1].([]any) {
			fields = append(fields, v.(string))
		}
		out = append(out, fields)
	}
	return out
}

func TestTaskAppendWritesTTLAndPublishes(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, channel := key(t, rdb, "stream"), key(t, rdb, "channel")
		next := listen(t, rdb, channel)
		ids, err := scripts.TaskAppend.Run(ctx, rdb, []string{stream}, 10000, 60000, channel, `{"type":"start"}`, finishJSON).StringSlice()
		require.NoError(t, err)
		require.Len(t, ids, 2)
		require.Equal(t, [][]string{{"data", `{"type":"start"}`}, {"data", finishJSON}}, entries(t, rdb, stream))
		ttl, err := rdb.PTTL(ctx, stream).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 50*time.Second)
		require.LessOrEqual(t, ttl, 60*time.Second)
		require.Equal(t, `{"type":"start"}`, next())
		require.Equal(t, finishJSON, next())
	})
}

func TestTaskAppendTrims(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream := key(t, rdb, "stream")
		for i := range 300 {
			require.NoError(t, scripts.TaskAppend.Run(ctx, rdb, []string{stream}, 10, 60000, "ch", fmt.Sprintf(`{"i":%d}`, i)).Err())
		}
		n, err := rdb.XLen(ctx, stream).Result()
		require.NoError(t, err)
		// MAXLEN ~ trims whole macro nodes on real Redis, exactly on miniredis.
		require.Less(t, n, int64(300))
		require.GreaterOrEqual(t, n, int64(10))
	})
}

func TestTaskAppendFailedWritePublishesNothing(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, channel := key(t, rdb, "stream"), key(t, rdb, "channel")
		require.NoError(t, rdb.Set(ctx, stream, "not a stream", 0).Err())
		next := listen(t, rdb, channel)
		err := scripts.TaskAppend.Run(ctx, rdb, []string{stream}, 10000, 60000, channel, finishJSON).Err()
		require.ErrorContains(t, err, "WRONGTYPE")
		n, err := rdb.Publish(ctx, channel, "probe").Result() // the next message must be the probe
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.Equal(t, "probe", next())
	})
}

// outcome runs TaskOutcome; meta and completions may be "" (left out).
func outcome(rdb *redis.Client, stream, meta, completions, channel, op, status, entryID string) ([]any, error) {
	keys := []string{stream}
	if meta != "" {
		keys = append(keys, meta)
		if completions != "" {
			keys = append(keys, completions)
		}
	}
	return scripts.TaskOutcome.Run(context.Background(), rdb, keys,
		10000, 60000, channel, op, outcomeJSON, finishJSON, status, "g", entryID).Slice()
}

func pendingCount(t *testing.T, rdb *redis.Client, stream string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, "g").Result()
	require.NoError(t, err)
	return p.Count
}

func TestTaskOutcomeAtomic(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, meta, completions, channel := key(t, rdb, "stream"), key(t, rdb, "meta"), key(t, rdb, "completions"), key(t, rdb, "channel")
		require.NoError(t, rdb.HSet(ctx, meta, "task_id", "t-1", "status", "running").Err())
		entry := pendingEntry(t, rdb, completions, "data", "{}")
		next := listen(t, rdb, channel)

		res, err := outcome(rdb, stream, meta, completions, channel, "op-1", "completed", entry)
		require.NoError(t, err)
		require.EqualValues(t, scripts.TaskOutcomeWritten, res[0])
		require.Equal(t, [][]string{
			{"data", outcomeJSON, "operation_id", "op-1"},
			{"data", finishJSON, "operation_id", "op-1"},
		}, entries(t, rdb, stream))
		msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
		require.NoError(t, err)
		require.Equal(t, []any{int64(1), msgs[0].ID, msgs[1].ID}, res)
		require.Equal(t, "completed", rdb.HGet(ctx, meta, "status").Val())
		require.Zero(t, pendingCount(t, rdb, completions))
		require.Equal(t, outcomeJSON, next())
		require.Equal(t, finishJSON, next())
		ttl, err := rdb.PTTL(ctx, stream).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Duration(0))

		// Delivered again (the task is completed now): nothing written twice.
		entry2 := pendingEntry2(t, rdb, completions)
		res, err = outcome(rdb, stream, meta, completions, channel, "op-1", "failed", entry2)
		require.NoError(t, err)
		require.Equal(t, []any{int64(scripts.TaskOutcomeNotRunning), "completed", ""}, res)
		require.Len(t, entries(t, rdb, stream), 2)
		require.Equal(t, "completed", rdb.HGet(ctx, meta, "status").Val())
		require.Zero(t, pendingCount(t, rdb, completions))
	})
}

// pendingEntry2 adds another pending entry to a stream whose group exists.
func pendingEntry2(t *testing.T, rdb *redis.Client, stream string) string {
	t.Helper()
	ctx := context.Background()
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", "{}"}}).Result()
	require.NoError(t, err)
	require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 10}).Err())
	return id
}

func TestTaskOutcomeNoTask(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		stream, meta, completions := key(t, rdb, "stream"), key(t, rdb, "meta"), key(t, rdb, "completions")
		entry := pendingEntry(t, rdb, completions, "data", "{}")
		res, err := outcome(rdb, stream, meta, completions, "ch", "op-1", "completed", entry)
		require.NoError(t, err)
		require.EqualValues(t, scripts.TaskOutcomeNoTask, res[0])
		require.Empty(t, entries(t, rdb, stream))
		require.Zero(t, pendingCount(t, rdb, completions))
		require.Zero(t, rdb.Exists(context.Background(), stream, meta).Val(), "no key created")
	})
}

func TestTaskOutcomeIdempotentPerOperation(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, meta := key(t, rdb, "stream"), key(t, rdb, "meta")
		// Earlier events of the task, as the Python service writes them.
		require.NoError(t, scripts.TaskAppend.Run(ctx, rdb, []string{stream}, 10000, 60000, "ch", `{"type":"start"}`).Err())

		first, err := outcome(rdb, stream, "", "", "ch", "op-1", "", "")
		require.NoError(t, err)
		require.EqualValues(t, scripts.TaskOutcomeWritten, first[0])
		again, err := outcome(rdb, stream, "", "", "ch", "op-1", "", "")
		require.NoError(t, err)
		require.Equal(t, []any{int64(scripts.TaskOutcomeFound), first[1], first[2]}, again)
		require.Len(t, entries(t, rdb, stream), 3)

		// A redelivery that finds the events (a crash before the status
		// change) still moves the status.
		require.NoError(t, rdb.HSet(ctx, meta, "status", "running").Err())
		res, err := outcome(rdb, stream, meta, "", "ch", "op-1", "failed", "")
		require.NoError(t, err)
		require.EqualValues(t, scripts.TaskOutcomeFound, res[0])
		require.Equal(t, "failed", rdb.HGet(ctx, meta, "status").Val())
		require.Len(t, entries(t, rdb, stream), 3)

		// Another operation on the finished stream writes nothing.
		other, err := outcome(rdb, stream, "", "", "ch", "op-2", "", "")
		require.NoError(t, err)
		require.Equal(t, []any{int64(scripts.TaskOutcomeFinished), "", ""}, other)
		require.Len(t, entries(t, rdb, stream), 3)
	})
}

func TestTaskOutcomeFinishedByPython(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream := key(t, rdb, "stream")
		require.NoError(t, scripts.TaskAppend.Run(ctx, rdb, []string{stream}, 10000, 60000, "ch", `{"type":"error","errorText":"x"}`, `{"type": "finish"}`).Err())
		res, err := outcome(rdb, stream, "", "", "ch", "op-1", "", "")
		require.NoError(t, err)
		require.EqualValues(t, scripts.TaskOutcomeFinished, res[0])
		require.Len(t, entries(t, rdb, stream), 2)
	})
}

func TestTaskOutcomeFailedWriteAcknowledgesNothing(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, meta, completions := key(t, rdb, "stream"), key(t, rdb, "meta"), key(t, rdb, "completions")
		require.NoError(t, rdb.HSet(ctx, meta, "status", "running").Err())
		require.NoError(t, rdb.Set(ctx, stream, "not a stream", 0).Err()) // WRONGTYPE
		entry := pendingEntry(t, rdb, completions, "data", "{}")
		_, err := outcome(rdb, stream, meta, completions, "ch", "op-1", "completed", entry)
		require.ErrorContains(t, err, "WRONGTYPE")
		require.Equal(t, "running", rdb.HGet(ctx, meta, "status").Val())
		require.EqualValues(t, 1, pendingCount(t, rdb, completions), "still pending")
	})
}
