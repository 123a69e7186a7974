package completion

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/scripts"
	"github.com/streamrelay/completion/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for entries written by an attacker who can XADD to the
// completion stream. They run on real Redis, where the limits of its Lua
// matter.

// rawEntryFields reads an entry's fields as Redis keeps them: in order,
// duplicates included (go-redis's XMessage has a map).
func rawEntryFields(t *testing.T, rdb *redis.Client, stream, id string) []string {
	t.Helper()
	res, err := rdb.Do(context.Background(), "XRANGE", stream, id, id).Slice()
	require.NoError(t, err)
	require.Len(t, res, 1)
	var out []string
	for _, v := range res[0].([]any)[1].([]any) {
		out = append(out, v.(string))
	}
	return out
}

// TestHostileManyFieldsAreDeadLettered: an entry with 5,000 fields used to be
// acknowledged by a dead-letter script that then failed on Lua's unpack
// limit, and was lost. Now it is dead-lettered as oversize (an excerpt, its
// size and field count), a 100-field entry is dead-lettered whole, and
// nothing stays pending.
func TestHostileManyFieldsAreDeadLettered(t *testing.T) {
	rdb := realClient(t)
	ctx := context.Background()
	stream := uniqueStream(t, rdb)
	c := newTestConsumer(t, rdb, registryWith(0), newRecorder(), testConfig(stream))
	startConsumer(t, c)

	add := func(op string, n int) string {
		values := []any{DataField, fmt.Sprintf(`{"operation_id":%q,"task_id":"t-x","success":true,"result":null,"error":null}`, op)}
		for i := range n {
			values = append(values, fmt.Sprintf("f%d", i), "v")
		}
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Result()
		require.NoError(t, err)
		return id
	}
	many, control := add("op-many", 5000), add("op-control", 100)
	eventually(t, func() bool { return len(deadLetters(t, rdb, stream)) == 2 }, "both entries should be dead-lettered")
	eventually(t, func() bool { return pendingCount(t, rdb, stream, "g") == 0 }, "nothing may stay pending")
	bySource := map[string]redis.XMessage{}
	for _, dl := range deadLetters(t, rdb, stream) {
		bySource[dl.Values[DeadLetterIDField].(string)] = dl
	}
	big := bySource[many].Values
	assert.Equal(t, ReasonOversize, big[DeadLetterReasonField])
	assert.Equal(t, "5001", big[wire.DeadLetterFieldsField])
	assert.Contains(t, big[wire.DeadLetterExcerptField], `"operation_id":"op-many"`)
	assert.NotContains(t, big, "f0")
	small := bySource[control].Values
	assert.Equal(t, ReasonTaskNotFound, small[DeadLetterReasonField])
	for i := range 100 {
		assert.Equal(t, "v", small[fmt.Sprintf("f%d", i)])
	}
	assert.EqualValues(t, 2, c.Stats().DeadLettered)
}

// TestHostileFieldNamesRoundTrip: whatever the producer named its fields,
// even like dead-letter metadata, the dead letter and a redrive give back
// exactly those fields, in their order.
func TestHostileFieldNamesRoundTrip(t *testing.T) {
	rdb := realClient(t)
	ctx := context.Background()
	stream := uniqueStream(t, rdb)
	c := newTestConsumer(t, rdb, registryWith(0), newRecorder(), testConfig(stream))
	stop := startConsumer(t, c)

	written := []string{DataField, `{"operation_id":"op-1","task_id":"t-x","success":true,"result":null,"error":null}`,
		"dl_reason", "A", "orig_dl_reason", "B", "orig_dl_x", "C", "orig_", "D"}
	values := make([]any, len(written))
	for i, v := range written {
		values[i] = v
	}
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Err())
	eventually(t, func() bool { return len(deadLetters(t, rdb, stream)) == 1 }, "not dead-lettered")
	require.NoError(t, stop())

	dls, err := rdb.XRange(ctx, DeadLetterStreamFor(stream), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, ReasonTaskNotFound, dls[0].Values[DeadLetterReasonField])
	assert.Equal(t, []string{DataField, written[1], "orig_dl_reason", "A", "orig_orig_dl_reason", "B", "orig_orig_dl_x", "C", "orig_orig_", "D"},
		rawEntryFields(t, rdb, DeadLetterStreamFor(stream), dls[0].ID)[:10], "the original fields first, in order, their names escaped")

	// The redrive script (package inspect runs it) gives them back as written.
	newID, err := scripts.Redrive.Run(ctx, rdb, []string{DeadLetterStreamFor(stream), stream}, dls[0].ID, wire.MaxEntryFields).Text()
	require.NoError(t, err)
	after := []redis.XMessage{{ID: newID}}
	assert.Equal(t, written, rawEntryFields(t, rdb, stream, after[0].ID))
}

// TestHostileNumbersPythonRejects: a number that overflows a double (1e400,
// an integer of 100,000 digits) is what Python's orjson refuses to decode,
// so Publish refuses it and the consumer dead-letters it as malformed.
func TestHostileNumbersPythonRejects(t *testing.T) {
	rdb := realClient(t)
	ctx := context.Background()
	stream := uniqueStream(t, rdb)
	huge := []string{`{"n":1e400}`, `{"n":` + strings.Repeat("7", 100_000) + `}`}
	for _, result := range huge {
		_, err := Publish(ctx, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: json.RawMessage(result)})
		require.ErrorIs(t, err, ErrMalformed)
		assert.Contains(t, err.Error(), "out of the range of a double")
	}
	require.Zero(t, rdb.Exists(ctx, stream).Val(), "nothing was published")

	c := newTestConsumer(t, rdb, registryWith(1), newRecorder(), testConfig(stream))
	startConsumer(t, c)
	for _, result := range huge {
		data := `{"operation_id":"op-1","task_id":"t-1","success":true,"result":` + result + `,"error":null}`
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, data}}).Err())
	}
	eventually(t, func() bool { return len(deadLetters(t, rdb, stream)) == 2 }, "both entries should be dead-lettered")
	for _, dl := range deadLetters(t, rdb, stream) {
		assert.Equal(t, ReasonMalformed, dl.Values[DeadLetterReasonField])
		assert.Contains(t, dl.Values[DeadLetterErrorField], "out of the range of a double")
	}
	assert.Zero(t, c.Stats().Handled, "the handler saw none")
}

// TestHostileForgedOperationID: an entry that names one task's operation
// but another task is not handed over (by default): it is dead-lettered as
// task_mismatch, and records no duplicate suppression that would swallow
// the real completion. With TrustOperationID it is handed over, as the
// Python consumer does.
func TestHostileForgedOperationID(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust=%v", trust), func(t *testing.T) {
			rdb := realClient(t)
			stream := uniqueStream(t, rdb)
			cfg := testConfig(stream)
			cfg.DedupTTL = time.Hour
			cfg.TrustOperationID = trust
			h := newRecorder()
			startConsumer(t, newTestConsumer(t, rdb, registryWith(2), h, cfg))
			publish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-2", Success: true, Result: StringResult("forged")})
			if trust {
				got := h.next(t)
				assert.Equal(t, "t-1", got.Task.TaskID, "found by operation id")
				return
			}
			eventually(t, func() bool { return len(deadLetters(t, rdb, stream)) == 1 }, "the forged entry is not dead-lettered")
			dl := deadLetters(t, rdb, stream)[0]
			assert.Equal(t, ReasonTaskMismatch, dl.Values[DeadLetterReasonField])
			assert.Contains(t, dl.Values[DeadLetterErrorField], `names task "t-2"`)
			publish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: StringResult("real")})
			got := h.next(t)
			assert.Equal(t, `"real"`, string(got.Message.Result), "the real completion is handled, not suppressed")
			assert.Len(t, h.all(), 1)
		})
	}
}
