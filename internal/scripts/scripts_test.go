package scripts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/internal/scripts"
)

// each runs f against miniredis and a real redis-server.
func each(t *testing.T, f func(t *testing.T, rdb *redis.Client, real bool)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		f(t, rdb, false)
	})
	t.Run("redis", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(t)})
		t.Cleanup(func() { _ = rdb.Close() })
		f(t, rdb, true)
	})
}

// key returns a key unique to the test, deleted when it ends.
func key(t *testing.T, rdb *redis.Client, name string) string {
	k := fmt.Sprintf("scripts-test:{%s:%d}:%s", t.Name(), time.Now().UnixNano(), name)
	t.Cleanup(func() { _ = rdb.Del(context.Background(), k).Err() })
	return k
}

// rawFields reads an entry's fields in their order, duplicates kept.
func rawFields(t *testing.T, rdb *redis.Client, stream, id string) []string {
	t.Helper()
	res, err := rdb.Do(context.Background(), "XRANGE", stream, id, id).Slice()
	require.NoError(t, err)
	require.Len(t, res, 1)
	entry := res[0].([]any)
	var out []string
	for _, v := range entry[1].([]any) {
		out = append(out, v.(string))
	}
	return out
}

// pendingEntry adds an entry with the given field/value list and delivers it
// to consumer c of group g.
func pendingEntry(t *testing.T, rdb *redis.Client, stream string, fields ...any) string {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: fields}).Result()
	require.NoError(t, err)
	_, err = rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 10}).Result()
	require.NoError(t, err)
	return id
}

func deadLetter(rdb *redis.Client, stream, dead, id, mode string, maxFields, maxBytes int, meta []any, given ...any) (int64, error) {
	args := []any{"g", id, 0, maxFields, maxBytes, mode, len(meta)}
	args = append(args, meta...)
	args = append(args, given...)
	return scripts.DeadLetter.Run(context.Background(), rdb, []string{stream, dead}, args...).Int64()
}

var meta = []any{"dl_reason", "task_not_found", "dl_error", "no such task", "dl_source_id", "x"}

func TestDeadLetterCopiesFieldsInOrderAndAcknowledges(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		id := pendingEntry(t, rdb, stream, "data", `{"x":1}`, "dl_reason", "A", "orig_dl_reason", "B", "orig_dl_x", "C", "zz", "last")
		n, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1<<20, meta)
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterMoved, n)

		msgs, err := rdb.XRange(ctx, dead, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		require.Equal(t, []string{
			"data", `{"x":1}`, "orig_dl_reason", "A", "orig_orig_dl_reason", "B", "orig_orig_dl_x", "C", "zz", "last",
			"dl_reason", "task_not_found", "dl_error", "no such task", "dl_source_id", "x",
		}, rawFields(t, rdb, dead, msgs[0].ID))
		p, err := rdb.XPending(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.Zero(t, p.Count, "acknowledged")

		// Redrive gives back exactly the producer's fields, in order.
		newID, err := scripts.Redrive.Run(ctx, rdb, []string{dead, stream}, msgs[0].ID, 1000).Text()
		require.NoError(t, err)
		require.Equal(t, []string{"data", `{"x":1}`, "dl_reason", "A", "orig_dl_reason", "B", "orig_dl_x", "C", "zz", "last"},
			rawFields(t, rdb, stream, newID))
		left, err := rdb.XLen(ctx, dead).Result()
		require.NoError(t, err)
		require.Zero(t, left)
	})
}

func TestDeadLetterManyFieldsBecomesOversize(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		fields := []any{"data", `{"operation_id":"op","task_id":"t","success":true}`}
		for i := range 5000 {
			fields = append(fields, fmt.Sprintf("f%d", i), "v")
		}
		id := pendingEntry(t, rdb, stream, fields...)
		n, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1<<20, meta)
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterOversize, n)
		msgs, err := rdb.XRange(ctx, dead, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		v := msgs[0].Values
		require.Equal(t, "oversize", v["dl_reason"])
		require.Equal(t, "5001", v["dl_fields"])
		require.Contains(t, v["dl_error"], "5001 fields")
		require.Equal(t, fields[1], v["dl_excerpt"])
		require.NotContains(t, v, "f1")
		p, err := rdb.XPending(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.Zero(t, p.Count)

		// Its redrive is refused with a clear reason, and nothing moves.
		err = scripts.Redrive.Run(ctx, rdb, []string{dead, stream}, msgs[0].ID, 1000).Err()
		require.ErrorContains(t, err, "oversize")
		require.True(t, redis.HasErrorPrefix(err, "NOTREDRIVABLE"), "%v", err)
	})
}

func TestDeadLetterBytesOverLimitBecomesOversize(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		id := pendingEntry(t, rdb, stream, "data", strings.Repeat("x", 600), "extra", strings.Repeat("y", 500))
		n, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1000, meta)
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterOversize, n)
		msgs, err := rdb.XRange(context.Background(), dead, "-", "+").Result()
		require.NoError(t, err)
		require.Equal(t, "1105", msgs[0].Values["dl_size"]) // 600 + len("extra") + 500
		require.Len(t, msgs[0].Values["dl_excerpt"], 256)
	})
}

func TestDeadLetterNotPendingWritesNothing(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		id := pendingEntry(t, rdb, stream, "data", "{}")
		require.NoError(t, rdb.XAck(ctx, stream, "g", id).Err())
		n, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1<<20, meta)
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterNotPending, n)
		require.Zero(t, rdb.Exists(ctx, dead).Val())
	})
}

func TestDeadLetterGoneThenGiven(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		id := pendingEntry(t, rdb, stream, "data", "{}")
		require.NoError(t, rdb.XDel(ctx, stream, id).Err())
		n, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1<<20, meta)
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterGone, n)
		require.Zero(t, rdb.Exists(ctx, dead).Val(), "nothing written")

		n, err = deadLetter(rdb, stream, dead, id, scripts.ModeGiven, 1000, 1<<20, meta, "data", "{}")
		require.NoError(t, err)
		require.EqualValues(t, scripts.DeadLetterMoved, n)
		msgs, err := rdb.XRange(ctx, dead, "-", "+").Result()
		require.NoError(t, err)
		require.Equal(t, "{}", msgs[0].Values["data"])
		p, err := rdb.XPending(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.Zero(t, p.Count)
	})
}

func TestDeadLetterFailedWriteAcknowledgesNothing(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		id := pendingEntry(t, rdb, stream, "data", "{}")
		require.NoError(t, rdb.Set(ctx, dead, "not a stream", 0).Err()) // the XADD fails: WRONGTYPE
		_, err := deadLetter(rdb, stream, dead, id, scripts.ModeCopy, 1000, 1<<20, meta)
		require.Error(t, err)
		p, err := rdb.XPending(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, p.Count, "still pending")
	})
}

func TestRedriveTakesFullIDsOnly(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream, dead := key(t, rdb, "s"), key(t, rdb, "dead")
		for seq := range 3 {
			require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: dead, ID: fmt.Sprintf("1000-%d", seq),
				Values: []any{"data", fmt.Sprint(seq), "dl_reason", "x"}}).Err())
		}
		err := scripts.Redrive.Run(ctx, rdb, []string{dead, stream}, "1000", 1000).Err()
		require.ErrorContains(t, err, "not a full stream id")
		for seq := range 3 {
			_, err := scripts.Redrive.Run(ctx, rdb, []string{dead, stream}, fmt.Sprintf("1000-%d", seq), 1000).Text()
			require.NoError(t, err)
			err = scripts.Redrive.Run(ctx, rdb, []string{dead, stream}, fmt.Sprintf("1000-%d", seq), 1000).Err()
			require.ErrorIs(t, err, redis.Nil, "moved once")
		}
		msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 3)
		for i, m := range msgs {
			require.Equal(t, map[string]any{"data": fmt.Sprint(i)}, m.Values)
		}
	})
}

func TestLease(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream := key(t, rdb, "s")
		mine := pendingEntry(t, rdb, stream, "data", "1")
		theirs, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", "2"}}).Result()
		require.NoError(t, err)
		_, err = rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "other", Streams: []string{stream, ">"}}).Result()
		require.NoError(t, err)
		readByC := func(data string) string {
			id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", data}}).Result()
			require.NoError(t, err)
			_, err = rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}}).Result()
			require.NoError(t, err)
			return id
		}
		acked := readByC("3")
		require.NoError(t, rdb.XAck(ctx, stream, "g", acked).Err())
		trimmed := readByC("4")
		require.NoError(t, rdb.XAck(ctx, stream, "g", trimmed).Err())
		require.NoError(t, rdb.XDel(ctx, stream, trimmed).Err())
		never := "1-1" // neither pending nor in the stream

		res, err := scripts.Lease.Run(ctx, rdb, []string{stream}, "g", "c", mine, theirs, acked, trimmed, never).Slice()
		require.NoError(t, err)
		require.Equal(t, []any{[]any{theirs}, []any{acked}}, res, "taken, then acked; the trimmed one is left out")
		p, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 10}).Result()
		require.NoError(t, err)
		require.Len(t, p, 2)
		require.Equal(t, []string{mine, "c"}, []string{p[0].ID, p[0].Consumer})
		require.Equal(t, []string{theirs, "other"}, []string{p[1].ID, p[1].Consumer}, "another's entry is not touched")

		res, err = scripts.Lease.Run(ctx, rdb, []string{stream}, "g", "c", mine).Slice()
		require.NoError(t, err)
		require.Equal(t, []any{[]any{}, []any{}}, res)
	})
}

func TestStaleConsumers(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		if !real {
			t.Skip("miniredis's XINFO CONSUMERS reports no idle time")
		}
		ctx := context.Background()
		stream := key(t, rdb, "s")
		pendingEntry(t, rdb, stream, "data", "1") // consumer c holds it
		for _, c := range []string{"idle", "alive", "me"} {
			require.NoError(t, rdb.XGroupCreateConsumer(ctx, stream, "g", c).Err())
		}
		require.Eventually(t, func() bool {
			cs, err := rdb.XInfoConsumers(ctx, stream, "g").Result()
			require.NoError(t, err)
			for _, c := range cs {
				if c.Name == "idle" && c.Idle >= 10*time.Millisecond {
					return true
				}
			}
			return false
		}, 5*time.Second, 5*time.Millisecond)
		deleted, err := scripts.StaleConsumers.Run(ctx, rdb, []string{stream}, "g", 10, "me", "alive").StringSlice()
		require.NoError(t, err)
		require.Equal(t, []string{"idle"}, deleted, "c holds an entry, alive and me are kept")
		deleted, err = scripts.StaleConsumers.Run(ctx, rdb, []string{stream}, "g", 10, "me").StringSlice()
		require.NoError(t, err)
		require.Equal(t, []string{"alive"}, deleted, "only pending entries and the names given protect")
	})
}

func TestRemoveSelf(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream := key(t, rdb, "s")
		id := pendingEntry(t, rdb, stream, "data", "1")
		n, err := scripts.RemoveSelf.Run(ctx, rdb, []string{stream}, "g", "c").Int64()
		require.NoError(t, err)
		require.EqualValues(t, -1, n, "holds an entry: stays")
		require.NoError(t, rdb.XAck(ctx, stream, "g", id).Err())
		n, err = scripts.RemoveSelf.Run(ctx, rdb, []string{stream}, "g", "c").Int64()
		require.NoError(t, err)
		require.EqualValues(t, 0, n)
		cs, err := rdb.XInfoConsumers(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.Empty(t, cs)
	})
}

func TestOwnership(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		owner := key(t, rdb, "owner")
		run := func(s *redis.Script, args ...any) int64 {
			n, err := s.Run(ctx, rdb, []string{owner}, args...).Int64()
			require.NoError(t, err)
			return n
		}
		require.EqualValues(t, 0, run(scripts.Renew, "a", 10_000), "a free key is not taken by a renewal")
		require.EqualValues(t, 1, run(scripts.Acquire, "a", 10_000))
		require.EqualValues(t, 1, run(scripts.Acquire, "a", 10_000), "taken again by its owner")
		require.EqualValues(t, 0, run(scripts.Acquire, "b", 10_000))
		require.EqualValues(t, 1, run(scripts.Renew, "a", 20_000))
		require.Greater(t, rdb.PTTL(ctx, owner).Val(), 10*time.Second)
		require.EqualValues(t, 0, run(scripts.Release, "b"))
		require.EqualValues(t, 1, run(scripts.Release, "a"))
		require.EqualValues(t, 1, run(scripts.Acquire, "b", 10_000))
	})
}

func TestHeartbeat(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		members := key(t, rdb, "members")
		require.NoError(t, rdb.ZAdd(ctx, members, redis.Z{Score: 1, Member: "long-gone"}).Err())
		names, err := scripts.Heartbeat.Run(ctx, rdb, []string{members}, "a", 10_000).StringSlice()
		require.NoError(t, err)
		require.Equal(t, []string{"a"}, names, "the silent member was dropped")
		names, err = scripts.Heartbeat.Run(ctx, rdb, []string{members}, "b", 10_000).StringSlice()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"a", "b"}, names)
		require.Greater(t, rdb.PTTL(ctx, members).Val(), 10*time.Second)
	})
}

func TestAdopt(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		stream := key(t, rdb, "s")
		pendingEntry(t, rdb, stream, "data", "1")
		res, err := scripts.Adopt.Run(ctx, rdb, []string{stream}, "g", "new", "0-0", 100).Slice()
		require.NoError(t, err)
		require.Len(t, res, 3)
		require.EqualValues(t, 1, res[1])
		cs, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 10}).Result()
		require.NoError(t, err)
		require.Equal(t, "new", cs[0].Consumer)
	})
}

func TestRegistryScripts(t *testing.T) {
	each(t, func(t *testing.T, rdb *redis.Client, real bool) {
		ctx := context.Background()
		prefix := key(t, rdb, "meta:")
		meta, op := prefix+"t1", key(t, rdb, "op")
		t.Cleanup(func() { _ = rdb.Del(ctx, meta).Err() })
		require.NoError(t, rdb.HSet(ctx, meta, "task_id", "t1", "status", "running").Err())
		require.NoError(t, rdb.Set(ctx, op, "t1", 0).Err())

		h, err := scripts.RegistryLookup.Run(ctx, rdb, []string{op}, prefix).StringSlice()
		require.NoError(t, err)
		require.Contains(t, h, "t1")
		h, err = scripts.RegistryLookup.Run(ctx, rdb, []string{op + "-missing", meta}, prefix).StringSlice()
		require.NoError(t, err)
		require.Contains(t, h, "t1", "falls back to the task id")

		set := func(k, from, to string) int64 {
			n, err := scripts.RegistryStatus.Run(ctx, rdb, []string{k}, from, to).Int64()
			require.NoError(t, err)
			return n
		}
		require.EqualValues(t, 1, set(meta, "running", "completed"))
		require.EqualValues(t, 0, set(meta, "running", "failed"))
		require.EqualValues(t, -1, set(prefix+"nope", "running", "failed"))
	})
}
