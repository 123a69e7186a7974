package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestRedrive(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		cfg := testConfig(stream)
		const tasks = 8
		var entries []poison
		for i := 1; i <= tasks; i++ {
			if i == 3 {
				entries = append(entries, unknownTask(i, "dl_note", "keep me", "orig_x", "mine"))
				continue
			}
			entries = append(entries, unknownTask(i))
		}
		entries = append(entries, poison{values: map[string]any{completion.DataField: "garbage"}, reason: completion.ReasonMalformed})
		deadLetterPoison(t, b.Client, cfg, entries)

		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Group: "g"})
		dls := allDeadLetters(t, in)
		require.Len(t, dls, len(entries))
		mark := lastID(t, b.Client, stream)
		lenBefore, err := b.Client.XLen(ctx, stream).Result()
		require.NoError(t, err)

		// One, by id: its original fields come back; a second redrive of
		// the same id, or of an unknown id, moves nothing.
		n, err := in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		got := streamValues(t, b.Client, stream, mark)
		require.Len(t, got, 1)
		assert.Equal(t, dls[0].Fields, got[0])
		n, err = in.Redrive(ctx, dls[0].ID, "1-1")
		require.NoError(t, err)
		assert.Equal(t, 0, n)
		n, err = in.Redrive(ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, n, "no ids, nothing to do")

		// A range, both ends included, and a limit.
		n, err = in.RedriveRange(ctx, dls[1].ID, dls[2].ID, 0)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		n, err = in.RedriveRange(ctx, "-", "+", 1)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		left := allDeadLetters(t, in)
		require.Len(t, left, len(entries)-4)
		assert.Equal(t, dls[4].ID, left[0].ID)
		_, err = in.RedriveRange(ctx, "-", "+", -1)
		assert.ErrorContains(t, err, "limit is -1")
		_, err = in.RedriveRange(ctx, "x", "+", 0)
		assert.ErrorContains(t, err, "not an id")
		_, err = in.RedriveRange(ctx, "-", "x", 0)
		assert.ErrorContains(t, err, "not an id")
		assert.Len(t, allDeadLetters(t, in), len(entries)-4, "a refused range moves nothing")

		// Two operators redrive everything at the same time: each entry
		// moves once.
		var wg sync.WaitGroup
		var counts [2]int
		var errs [2]error
		for i := range counts {
			wg.Go(func() { counts[i], errs[i] = in.RedriveAll(ctx) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs[:]...))
		assert.Equal(t, len(entries)-4, counts[0]+counts[1], "moved %v", counts)
		lenAfter, err := b.Client.XLen(ctx, stream).Result()
		require.NoError(t, err)
		assert.Equal(t, lenBefore+int64(len(entries)), lenAfter, "the stream must gain each dead letter once")
		assert.Empty(t, deadLetters(t, b.Client, stream))

		// What came back is what went in: the dl_ and orig_ fields have
		// their names back, and the dead-letter fields are gone.
		var redriven, want []string
		for _, v := range streamValues(t, b.Client, stream, mark) {
			redriven = append(redriven, fmt.Sprint(v))
		}
		for _, e := range entries {
			want = append(want, fmt.Sprint(stringValues(e.values)))
		}
		sort.Strings(redriven)
		sort.Strings(want)
		assert.Equal(t, want, redriven)

		// A consumer whose registry now knows the tasks handles each
		// redriven completion once; the garbage is dead-lettered again.
		h := newRecorder()
		c := newTestConsumer(t, b.Client, registryForUnknown(tasks), h, cfg)
		stop := startConsumer(t, c)
		eventually(t, func() bool {
			return len(h.all()) >= tasks && c.Stats().DeadLettered == 1 && pendingCount(t, b.Client, stream, "g") == 0
		}, "redriven entries not handled: %+v", c.Stats())
		require.NoError(t, stop())
		seen := map[string]int{}
		for _, got := range h.all() {
			seen[got.Message.OperationID]++
		}
		for i := 1; i <= tasks; i++ {
			assert.Equal(t, 1, seen[fmt.Sprintf("op-u%d", i)], "op-u%d handled", i)
		}
		assert.Len(t, seen, tasks)
		again := deadLetters(t, b.Client, stream)
		require.Len(t, again, 1)
		assert.Equal(t, "garbage", again[0].Values[completion.DataField])
	})
}

func TestRedriveWithoutScript(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		// A dead-letter key with another hash tag than the stream's.
		dead := otherTagDeadStream(t, b.Client, stream)
		cfg := testConfig(stream)
		cfg.DeadLetterStream = dead
		entries := []poison{unknownTask(1, "dl_note", "keep me", "orig_x", "mine"), unknownTask(2), unknownTask(3)}
		deadLetterPoison(t, b.Client, cfg, entries)

		in := newInspector(t, plainClient{b.Client}, inspect.Config{Stream: stream, DeadLetterStream: dead})
		require.False(t, keys.TopologyOf(plainClient{b.Client}).SameNode(dead, stream), "no script may touch both keys")
		dls := allDeadLetters(t, in)
		require.Len(t, dls, 3)
		mark := lastID(t, b.Client, stream)

		n, err := in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		n, err = in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 0, n)
		n, err = in.RedriveAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, n)

		got := streamValues(t, b.Client, stream, mark)
		require.Len(t, got, 3)
		for i, dl := range dls {
			assert.Equal(t, dl.Fields, got[i])
		}
		notes := 0
		for _, v := range got {
			if v["dl_note"] == "keep me" && v["orig_x"] == "mine" {
				notes++
			}
		}
		assert.Equal(t, 1, notes, "the dl_ and orig_ fields are back under their own names: %v", got)
		n64, err := b.Client.XLen(ctx, dead).Result()
		require.NoError(t, err)
		assert.Zero(t, n64)
	})
}

func TestRedriveRefusesEmptyDeadLetter(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		for _, path := range []string{"script", "xrange-xadd-xdel"} {
			t.Run(path, func(t *testing.T) {
				ctx := context.Background()
				stream := uniqueStream(t, b.Client)
				var client inspect.Client = b.Client
				cfg := inspect.Config{Stream: stream}
				if path != "script" {
					client = plainClient{b.Client}
					cfg.DeadLetterStream = otherTagDeadStream(t, b.Client, stream)
				}
				in := newInspector(t, client, cfg)
				dead := in.DeadLetterStreams()[0]
				id, err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: dead, Values: []any{completion.DeadLetterReasonField, "manual"}}).Result()
				require.NoError(t, err)
				dl, ok, err := in.DeadLetter(ctx, id)
				require.NoError(t, err)
				require.True(t, ok)
				assert.False(t, dl.Redrivable())

				n, err := in.Redrive(ctx, id)
				assert.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.ErrorContains(t, err, "no original fields")
				assert.Equal(t, 0, n)
				n, err = in.RedriveAll(ctx)
				assert.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.Equal(t, 0, n)
				n64, err := b.Client.XLen(ctx, dead).Result()
				require.NoError(t, err)
				assert.Equal(t, int64(1), n64, "a refused dead letter stays")
				n64, err = b.Client.Exists(ctx, stream).Result()
				require.NoError(t, err)
				assert.Zero(t, n64, "nothing was written to the stream")
			})
		}
	})
}

func TestPurge(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		cfg := testConfig(stream)
		deadLetterPoison(t, b.Client, cfg, []poison{unknownTask(1), unknownTask(2), unknownTask(3), unknownTask(4)})
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		dls := allDeadLetters(t, in)
		require.Len(t, dls, 4)

		n, err := in.Purge(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		n, err = in.Purge(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 0, n)
		n, err = in.Purge(ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, n)
		_, err = in.Purge(ctx, "nonsense")
		assert.ErrorContains(t, err, "not an id")
		n, err = in.PurgeAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		assert.Empty(t, allDeadLetters(t, in))
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Zero(t, si.DeadLetterLength)
		assert.Equal(t, int64(4), si.Length, "purging leaves the stream alone")
	})
}

func TestConcurrentRedriveAllMovesEachOnce(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		// Dead letters in the consumer's format, written directly.
		const n, operators = 300, 4
		pipe := b.Client.Pipeline()
		for i := range n {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: in.DeadLetterStreams()[0], Values: []any{
				completion.DataField, fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t","success":true,"result":null,"error":null}`, i),
				completion.DeadLetterReasonField, completion.ReasonTaskNotFound, completion.DeadLetterIDField, fmt.Sprintf("1-%d", i),
			}})
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)

		var wg sync.WaitGroup
		var counts [operators]int
		var errs [operators]error
		for i := range operators {
			wg.Go(func() { counts[i], errs[i] = in.RedriveAll(ctx) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs[:]...))
		total := 0
		for _, c := range counts {
			total += c
		}
		assert.Equal(t, n, total, "moved per operator: %v", counts)
		msgs, err := b.Client.XRange(ctx, stream, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, n, "the stream must gain each dead letter exactly once")
		seen := map[string]bool{}
		for _, m := range msgs {
			seen[m.Values[completion.DataField].(string)] = true
			assert.Len(t, m.Values, 1, "dead-letter fields must be stripped: %v", m.Values)
		}
		assert.Len(t, seen, n)
		assert.Empty(t, deadLetters(t, b.Client, stream))
	})
}
