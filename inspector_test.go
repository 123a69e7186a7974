package completion

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

// The clients an Inspector must accept.
var (
	_ InspectorClient = (*redis.Client)(nil)
	_ InspectorClient = (*redis.ClusterClient)(nil)
	_ InspectorClient = (*redis.Ring)(nil)
	_ InspectorClient = redis.UniversalClient(nil)
)

// poison is an entry a consumer with an empty registry dead-letters.
type poison struct {
	values map[string]any
	reason string
	op     string // operation id when the entry is a valid message
}

// unknownTask returns a valid message entry for a task no registry knows
// (yet): task t-uN, operation op-uN.
func unknownTask(n int, extra ...string) poison {
	v := map[string]any{DataField: fmt.Sprintf(`{"operation_id":"op-u%d","task_id":"t-u%d","success":true,"result":{"n":%d},"error":null}`, n, n, n)}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return poison{values: v, reason: ReasonTaskNotFound, op: fmt.Sprintf("op-u%d", n)}
}

// registryForUnknown returns a registry that knows tasks t-u1 .. t-un.
func registryForUnknown(n int) *MemoryRegistry {
	reg := &MemoryRegistry{}
	for i := 1; i <= n; i++ {
		reg.Register(Task{TaskID: fmt.Sprintf("t-u%d", i), SessionID: "s", ToolCallID: "tc", OperationID: fmt.Sprintf("op-u%d", i)})
	}
	return reg
}

// deadLetterPoison adds entries to cfg.Stream and runs a Consumer (with an
// empty registry) until it has dead-lettered all of them. It returns the
// entries' ids in the stream.
func deadLetterPoison(t *testing.T, b backend, cfg Config, entries []poison) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, len(entries))
	for i, e := range entries {
		id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: e.values}).Result()
		require.NoError(t, err)
		ids[i] = id
	}
	c := newTestConsumer(t, b.rdb, &MemoryRegistry{}, newRecorder(), cfg)
	stop := startConsumer(t, c)
	eventually(t, func() bool {
		return c.Stats().DeadLettered == int64(len(entries)) && pendingCount(t, b.rdb, cfg.Stream, cfg.Group) == 0
	}, "poison not dead-lettered: %+v", c.Stats())
	require.NoError(t, stop())
	return ids
}

func newTestInspector(t testing.TB, client InspectorClient, cfg InspectorConfig) *Inspector {
	t.Helper()
	in, err := NewInspector(client, cfg)
	require.NoError(t, err)
	return in
}

// streamValues returns the fields of the stream's entries after id after.
func streamValues(t testing.TB, rdb *redis.Client, stream, after string) []map[string]string {
	t.Helper()
	start, err := nextID(after)
	require.NoError(t, err)
	msgs, err := rdb.XRange(context.Background(), stream, start, "+").Result()
	require.NoError(t, err)
	out := make([]map[string]string, len(msgs))
	for i, m := range msgs {
		out[i] = map[string]string{}
		for k, v := range m.Values {
			out[i][k] = v.(string)
		}
	}
	return out
}

func stringValues(v map[string]any) map[string]string {
	out := map[string]string{}
	for k, x := range v {
		out[k] = fmt.Sprint(x)
	}
	return out
}

func TestNewInspectorDefaults(t *testing.T) {
	rdb := newMini(t)
	in := newTestInspector(t, rdb, InspectorConfig{})
	assert.Equal(t, InspectorConfig{Stream: DefaultStream, Group: DefaultGroup, DeadLetterStream: "{" + DefaultStream + "}" + DefaultDeadLetterSuffix}, in.Config())
	assert.True(t, in.atomic, "a *redis.Client redrives with a script")

	// The consumer's default, in the stream's cluster slot.
	in = newTestInspector(t, rdb, InspectorConfig{Stream: "s"})
	assert.Equal(t, DeadLetterStreamFor("s"), in.Config().DeadLetterStream)
	assert.Equal(t, "{s}:dead", in.Config().DeadLetterStream)
	in = newTestInspector(t, rdb, InspectorConfig{Stream: "x:{s}"})
	assert.Equal(t, "x:{s}:dead", in.Config().DeadLetterStream)

	_, err := NewInspector(rdb, InspectorConfig{Stream: "s", DeadLetterStream: "s"})
	assert.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewInspector(nil, InspectorConfig{})
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestInspectorSameNode(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { _ = ring.Close() })
	tests := []struct {
		name   string
		client InspectorClient
		a, b   string
		want   bool
	}{
		{"client", newMini(t), "s", "s:dead", true},
		{"cluster, shared tag", cluster, "{s}", "{s}:dead", true},
		{"cluster, other slots", cluster, "s", "s:dead", false},
		{"ring, shared tag", ring, "x{s}", "y{s}:dead", true},
		{"ring, no tag", ring, "s", "s:dead", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, keys.TopologyOf(tt.client).SameNode(tt.a, tt.b))
		})
	}
}

func TestInspectorNextID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"5-0", "5-1"},
		{"5-41", "5-42"},
		{"5", "5-1"},
		{"5-18446744073709551615", "6-0"},
	}
	for _, tt := range tests {
		got, err := nextID(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, "nextID(%q)", tt.in)
	}
	for _, bad := range []string{"", "x", "5-x", "18446744073709551615-18446744073709551615"} {
		_, err := nextID(bad)
		assert.Error(t, err, "nextID(%q)", bad)
	}
}

func TestInspectorInfoOfMissingStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		si, err := in.Info(context.Background())
		require.NoError(t, err)
		assert.Equal(t, StreamInfo{Stream: stream, DeadLetterStream: DeadLetterStreamFor(stream)}, si)
	})
}

func TestInspectorInfoPendingAndDeadLetters(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		start := time.Now()
		entries := []poison{
			{values: map[string]any{"other": "x"}, reason: ReasonMalformed},
			{values: map[string]any{DataField: "not json"}, reason: ReasonMalformed},
			unknownTask(1),
			unknownTask(2, "dl_note", "keep me", "extra", "y"),
		}
		poisonIDs := deadLetterPoison(t, b, cfg, entries)

		// A backlog: 20 entries, of which a consumer that then crashed read
		// the first 5.
		const backlog, read = 20, 5
		var ids []string
		for i := 1; i <= backlog; i++ {
			ids = append(ids, publish(t, b.rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true}))
		}
		_, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "crashed", Streams: []string{stream, ">"}, Count: read, Block: -1}).Result()
		require.NoError(t, err)

		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Group: "g"})

		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.True(t, si.Exists)
		assert.Equal(t, stream, si.Stream)
		assert.Equal(t, int64(len(entries)+backlog), si.Length)
		assert.Equal(t, poisonIDs[0], si.FirstID)
		assert.Equal(t, ids[backlog-1], si.LastID)
		assert.Equal(t, DeadLetterStreamFor(stream), si.DeadLetterStream)
		assert.Equal(t, int64(len(entries)), si.DeadLetterLength)
		require.Len(t, si.Groups, 1)
		g, ok := si.Group("g")
		require.True(t, ok)
		assert.Equal(t, int64(read), g.Pending)
		assert.Equal(t, ids[read-1], g.LastDeliveredID)
		var crashed *ConsumerInfo
		for i, c := range g.Consumers {
			if c.Name == "crashed" {
				crashed = &g.Consumers[i]
			}
		}
		require.NotNil(t, crashed, "consumers: %+v", g.Consumers)
		assert.Equal(t, int64(read), crashed.Pending)
		if b.real { // miniredis reports the stream length as lag, and no idle times
			assert.True(t, g.LagKnown)
			assert.Equal(t, int64(backlog-read), g.Lag)
			assert.Less(t, crashed.Idle, time.Minute)
		}

		pending, err := in.Pending(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, pending, read)
		for i, p := range pending {
			assert.Equal(t, ids[i], p.ID)
			assert.Equal(t, "crashed", p.Consumer)
			assert.Equal(t, int64(1), p.Deliveries)
			assert.GreaterOrEqual(t, p.Idle, time.Duration(0))
		}
		pending, err = in.Pending(ctx, "g", 2)
		require.NoError(t, err)
		assert.Len(t, pending, 2)
		_, err = in.Pending(ctx, "no-such-group", 0)
		assert.ErrorContains(t, err, "NOGROUP")
		_, err = in.Pending(ctx, "", -1)
		assert.Error(t, err)

		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, len(entries))
		bySource := map[string]int{}
		for i, id := range poisonIDs {
			bySource[id] = i
		}
		for _, dl := range dls {
			i, ok := bySource[dl.SourceID]
			require.True(t, ok, "dead letter of an unknown source id: %+v", dl)
			e := entries[i]
			assert.Equal(t, e.reason, dl.Reason, "entry %d", i)
			assert.Equal(t, stringValues(e.values), dl.Fields, "entry %d: original fields", i)
			assert.Equal(t, int64(1), dl.Deliveries)
			assert.Equal(t, "c1", dl.Consumer)
			assert.Equal(t, "g", dl.Group)
			assert.Equal(t, stream, dl.Stream)
			assert.NotEmpty(t, dl.Error)
			assert.WithinRange(t, dl.Time, start.Add(-time.Second), time.Now().Add(time.Second))
			if e.op == "" {
				assert.Nil(t, dl.Message)
				assert.ErrorIs(t, dl.DecodeErr, ErrMalformed)
				continue
			}
			require.NotNil(t, dl.Message, "entry %d: %v", i, dl.DecodeErr)
			assert.NoError(t, dl.DecodeErr)
			assert.Equal(t, e.op, dl.Message.OperationID)
			assert.True(t, dl.Message.Success)
		}

		// Paging with an exclusive start.
		assertPagesDeadLetters(t, in, dls, func(dl DeadLetter) string { return dl.ID })
	})
}

func TestInspectorRedrive(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		const tasks = 8
		var entries []poison
		for i := 1; i <= tasks; i++ {
			if i == 3 {
				entries = append(entries, unknownTask(i, "dl_note", "keep me"))
				continue
			}
			entries = append(entries, unknownTask(i))
		}
		entries = append(entries, poison{values: map[string]any{DataField: "garbage"}, reason: ReasonMalformed})
		deadLetterPoison(t, b, cfg, entries)

		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Group: "g"})
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, len(entries))
		last, err := b.rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		require.NoError(t, err)
		mark := last[0].ID
		lenBefore, err := b.rdb.XLen(ctx, stream).Result()
		require.NoError(t, err)

		// One, by id: its original fields come back; a second redrive of
		// the same id, or of an unknown id, moves nothing.
		n, err := in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		got := streamValues(t, b.rdb, stream, mark)
		require.Len(t, got, 1)
		assert.Equal(t, dls[0].Fields, got[0])
		n, err = in.Redrive(ctx, dls[0].ID, "1-1")
		require.NoError(t, err)
		assert.Equal(t, 0, n)

		// A range, both ends included, and a limit.
		n, err = in.RedriveRange(ctx, dls[1].ID, dls[2].ID, 0)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		n, err = in.RedriveRange(ctx, "-", "+", 1)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		left, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, left, len(entries)-4)
		assert.Equal(t, dls[4].ID, left[0].ID)

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
		lenAfter, err := b.rdb.XLen(ctx, stream).Result()
		require.NoError(t, err)
		assert.Equal(t, lenBefore+int64(len(entries)), lenAfter, "the stream must gain each dead letter once")
		assert.Empty(t, deadLetters(t, b.rdb, stream))

		// What came back is what went in: the dl_ field has its name
		// back, and the dead-letter fields are gone.
		var redriven, want []string
		for _, v := range streamValues(t, b.rdb, stream, mark) {
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
		c := newTestConsumer(t, b.rdb, registryForUnknown(tasks), h, cfg)
		stop := startConsumer(t, c)
		eventually(t, func() bool {
			return len(h.all()) >= tasks && c.Stats().DeadLettered == 1 && pendingCount(t, b.rdb, stream, "g") == 0
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
		again := deadLetters(t, b.rdb, stream)
		require.Len(t, again, 1)
		assert.Equal(t, "garbage", again[0].Values[DataField])
	})
}

// plainClient hides all but the InspectorClient methods, so the inspector cannot know that
// both keys are on one node.
type plainClient struct{ InspectorClient }

func TestInspectorRedriveWithoutScript(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		// A dead-letter key with another hash tag than the stream's.
		dead := strings.NewReplacer("{", "", "}", "").Replace(stream) + ":dead"
		t.Cleanup(func() { _ = b.rdb.Del(context.Background(), dead).Err() })
		cfg := testConfig(stream)
		cfg.DeadLetterStream = dead
		entries := []poison{unknownTask(1, "dl_note", "keep me"), unknownTask(2), unknownTask(3)}
		deadLetterPoison(t, b, cfg, entries)

		in := newTestInspector(t, plainClient{b.rdb}, InspectorConfig{Stream: stream, DeadLetterStream: dead})
		require.False(t, in.atomic)
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, 3)
		last, err := b.rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		require.NoError(t, err)
		mark := last[0].ID

		n, err := in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		n, err = in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 0, n)
		n, err = in.RedriveAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, n)

		got := streamValues(t, b.rdb, stream, mark)
		require.Len(t, got, 3)
		for i, dl := range dls {
			assert.Equal(t, dl.Fields, got[i])
		}
		notes := 0
		for _, v := range got {
			if v["dl_note"] == "keep me" {
				notes++
			}
		}
		assert.Equal(t, 1, notes, "the dl_ field is back under its own name: %v", got)
		n64, err := b.rdb.XLen(ctx, dead).Result()
		require.NoError(t, err)
		assert.Zero(t, n64)
	})
}

func TestInspectorRedriveRefusesEmptyDeadLetter(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: in.Config().DeadLetterStream, Values: []any{DeadLetterReasonField, "manual"}}).Result()
		require.NoError(t, err)
		n, err := in.Redrive(ctx, id)
		assert.ErrorContains(t, err, "no original fields")
		assert.Equal(t, 0, n)
		assert.Len(t, deadLetters(t, b.rdb, stream), 1, "a refused dead letter stays")
	})
}

func TestInspectorPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		deadLetterPoison(t, b, cfg, []poison{unknownTask(1), unknownTask(2), unknownTask(3), unknownTask(4)})
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
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
		n, err = in.PurgeAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		left, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		assert.Empty(t, left)
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Zero(t, si.DeadLetterLength)
		assert.Equal(t, int64(4), si.Length, "purging leaves the stream alone")
	})
}

func TestInspectorPublishTest(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: StringResult("<ok>")}
		id, err := in.PublishTest(ctx, msg)
		require.NoError(t, err)
		got, err := b.rdb.XRange(ctx, stream, id, id).Result()
		require.NoError(t, err)
		require.Len(t, got, 1)
		want, err := msg.MarshalJSON()
		require.NoError(t, err)
		assert.Equal(t, string(want), got[0].Values[DataField])

		_, err = in.PublishTest(ctx, Message{TaskID: "t-1"})
		assert.ErrorIs(t, err, ErrMalformed)
	})
}

func TestInspectorTail(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		first := publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		_, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"other", "x"}}).Result()
		require.NoError(t, err)

		// From "0": what is there, then what comes; fn's error ends it.
		errEnough := errors.New("enough")
		var got []Entry
		done := make(chan error, 1)
		go func() {
			done <- in.Tail(ctx, "0", func(e Entry) error {
				got = append(got, e)
				if len(got) == 3 {
					return errEnough
				}
				return nil
			})
		}()
		publish(t, b.rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: false, Error: "boom"})
		select {
		case err := <-done:
			require.ErrorIs(t, err, errEnough)
		case <-time.After(10 * time.Second):
			t.Fatal("Tail did not return")
		}
		require.Len(t, got, 3)
		assert.Equal(t, first, got[0].ID)
		assert.Equal(t, "op-1", got[0].Message.OperationID)
		assert.Nil(t, got[1].Message)
		assert.ErrorIs(t, got[1].DecodeErr, ErrMalformed)
		assert.Equal(t, map[string]string{"other": "x"}, got[1].Fields)
		assert.Equal(t, "op-2", got[2].Message.OperationID)
		assert.Equal(t, "boom", got[2].Message.Error)

		// From an id: only what follows it.
		got = nil
		err = in.Tail(ctx, first, func(e Entry) error {
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
		seen := make(chan Entry, 100)
		go func() {
			done <- in.Tail(tctx, "$", func(e Entry) error { seen <- e; return nil })
		}()
		var live Entry
		for i := 0; live.ID == ""; i++ {
			publish(t, b.rdb, stream, Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: "t", Success: true})
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
	})
}

func TestInspectorConcurrentRedriveAllMovesEachOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream})
		// Dead letters in the consumer's format, written directly.
		const n, operators = 300, 4
		pipe := b.rdb.Pipeline()
		for i := range n {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: in.Config().DeadLetterStream, Values: []any{
				DataField, fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t","success":true,"result":null,"error":null}`, i),
				DeadLetterReasonField, ReasonTaskNotFound, DeadLetterIDField, fmt.Sprintf("1-%d", i),
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
		msgs, err := b.rdb.XRange(ctx, stream, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, n, "the stream must gain each dead letter exactly once")
		seen := map[string]bool{}
		for _, m := range msgs {
			seen[m.Values[DataField].(string)] = true
			assert.Len(t, m.Values, 1, "dead-letter fields must be stripped: %v", m.Values)
		}
		assert.Len(t, seen, n)
		assert.Empty(t, deadLetters(t, b.rdb, stream))
	})
}

// ---------------------------------------------------------------------------
// A partitioned stream (InspectorConfig.Partitions)

// partScenario is a partitioned stream with a history made by a real
// partitioned Consumer: poison it dead-lettered in every partition, then
// (addBacklog) a backlog of which a crashed consumer read some of every
// partition.
type partScenario struct {
	rdb     redis.UniversalClient
	stream  string
	parts   int
	keys    []string // partition keys
	cfg     Config   // the consumer's
	tasks   int      // unknown tasks t-u1 .. t-u<tasks> among the poison
	garbage []int    // partitions an undecodable entry went to
	length  []int64  // entries per partition
	dead    [][]string
	backlog [][]string // backlog ids per partition, oldest first
	read    int        // backlog entries "crashed" holds in each partition
}

// newPartScenario publishes completions for tasks no registry knows to the
// parts partitions of stream (WithPartitions), writes an undecodable entry
// into the first and the last partition, and runs a Consumer with
// Config.Partitions (and dead, when not empty, as its DeadLetterStream)
// until it has dead-lettered all of them.
func newPartScenario(t *testing.T, rdb redis.UniversalClient, stream string, parts, tasks int, dead string) *partScenario {
	t.Helper()
	ctx := context.Background()
	s := &partScenario{rdb: rdb, stream: stream, parts: parts, tasks: tasks,
		length: make([]int64, parts), dead: make([][]string, parts), backlog: make([][]string, parts)}
	for i := range parts {
		s.keys = append(s.keys, PartitionStream(stream, i, parts))
	}
	for i := 1; i <= tasks; i++ {
		task := fmt.Sprintf("t-u%d", i)
		_, err := Publish(ctx, rdb, stream, Message{OperationID: fmt.Sprintf("op-u%d", i), TaskID: task, Success: true,
			Result: []byte(fmt.Sprintf(`{"n":%d}`, i))}, WithPartitions(parts))
		require.NoError(t, err)
		s.length[keys.PartitionOf(task, parts)]++
	}
	s.garbage = []int{0, parts - 1}
	for _, p := range s.garbage {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.keys[p], Values: []any{DataField, fmt.Sprintf("garbage in %d", p)}}).Err())
		s.length[p]++
	}
	s.cfg = testConfig(stream)
	s.cfg.Partitions = parts
	s.cfg.DeadLetterStream = dead
	c := newTestConsumer(t, rdb, &MemoryRegistry{}, newRecorder(), s.cfg)
	stop := startConsumer(t, c)
	eventually(t, func() bool {
		if c.Stats().DeadLettered != int64(tasks+len(s.garbage)) {
			return false
		}
		for _, k := range s.keys {
			if cpending(t, rdb, k, "g") != 0 {
				return false
			}
		}
		return true
	}, "poison not dead-lettered: %+v", c.Stats())
	require.NoError(t, stop())
	if dead == "" {
		for p, k := range s.keys {
			msgs, err := rdb.XRange(ctx, DeadLetterStreamFor(k), "-", "+").Result()
			require.NoError(t, err)
			for _, m := range msgs {
				s.dead[p] = append(s.dead[p], m.ID)
			}
			require.NotEmpty(t, s.dead[p], "partition %d got no poison: choose other task names", p)
		}
	}
	return s
}

// addBacklog publishes n completions of tasks t-1 .. t-n to the partitions
// and has consumer "crashed" read read entries of each partition.
func (s *partScenario) addBacklog(t *testing.T, n, read int) {
	t.Helper()
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		task := fmt.Sprintf("t-%d", i)
		id, err := Publish(ctx, s.rdb, s.stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true}, WithPartitions(s.parts))
		require.NoError(t, err)
		p := keys.PartitionOf(task, s.parts)
		s.backlog[p] = append(s.backlog[p], id)
		s.length[p]++
	}
	s.read = read
	for p, k := range s.keys {
		require.Greater(t, len(s.backlog[p]), read, "partition %d: too small a backlog: choose other task names", p)
		_, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "crashed", Streams: []string{k, ">"}, Count: int64(read), Block: -1}).Result()
		require.NoError(t, err)
	}
}

// partitionOfOp returns the partition the scenario's completion of
// operation op-uN or op-N went to.
func (s *partScenario) partitionOfOp(op string) int {
	return keys.PartitionOf("t-"+strings.TrimPrefix(op, "op-"), s.parts)
}

func (s *partScenario) lengths(t testing.TB) []int64 {
	t.Helper()
	out := make([]int64, s.parts)
	for p, k := range s.keys {
		n, err := s.rdb.XLen(context.Background(), k).Result()
		require.NoError(t, err)
		out[p] = n
	}
	return out
}

func sumOf[T int | int64](xs []T) T {
	var n T
	for _, x := range xs {
		n += x
	}
	return n
}

func TestInspectorPartitionsConfig(t *testing.T) {
	rdb := newMini(t)
	tests := []struct {
		name string
		cfg  InspectorConfig
		want string // "" for valid
	}{
		{"not partitioned", InspectorConfig{Stream: "s", Partitions: 1}, ""},
		{"partitioned", InspectorConfig{Stream: "s", Partitions: 4}, ""},
		{"most partitions", InspectorConfig{Stream: "s", Partitions: MaxPartitions}, ""},
		{"too many", InspectorConfig{Stream: "s", Partitions: MaxPartitions + 1}, "at most 1024"},
		{"negative", InspectorConfig{Stream: "s", Partitions: -1}, "Partitions is -1"},
		{"hash tag", InspectorConfig{Stream: "{s}", Partitions: 2}, "must not carry a {hash tag}"},
		{"hash tag, one partition", InspectorConfig{Stream: "{s}", Partitions: 1}, ""},
		{"dead letters in a partition", InspectorConfig{Stream: "s", Partitions: 2, DeadLetterStream: PartitionStream("s", 1, 2)}, "key of partition 1 of 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := NewInspector(rdb, tt.cfg)
			if tt.want != "" {
				require.ErrorIs(t, err, ErrInvalidConfig)
				assert.ErrorContains(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.cfg.Partitions, in.Config().Partitions)
		})
	}

	// Partitions 1 is the stream itself, as for a Consumer.
	in := newTestInspector(t, rdb, InspectorConfig{Stream: "s", Partitions: 1})
	assert.Equal(t, "{s}:dead", in.Config().DeadLetterStream)
	i, key := in.PartitionFor("t-1")
	assert.Equal(t, 0, i)
	assert.Equal(t, "s", key)

	// Partitioned: each partition has its own dead-letter stream, so
	// Config names none.
	in = newTestInspector(t, rdb, InspectorConfig{Stream: "s", Partitions: 4})
	assert.Equal(t, InspectorConfig{Stream: "s", Group: DefaultGroup, Partitions: 4}, in.Config())
	for _, task := range []string{"t-1", "t-2", "t-3"} {
		i, key := in.PartitionFor(task)
		assert.Equal(t, keys.PartitionOf(task, 4), i)
		assert.Equal(t, PartitionStream("s", i, 4), key)
	}
}

func TestInspectorPartitionsInfoPendingDeadLetters(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts, read = 4, 3
		s := newPartScenario(t, b.rdb, untaggedStream(t, b.rdb), parts, 12, "")
		s.addBacklog(t, 40, read)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: s.stream, Group: "g", Partitions: parts})

		// Info: each partition as an Inspector of that one stream sees it,
		// and the totals are their sums.
		si, err := in.Info(ctx)
		require.NoError(t, err)
		require.Len(t, si.Partitions, parts)
		var firstIDs, lastIDs, lastDelivered []string
		var deadLengths, lags, entriesRead []int64
		for p, ps := range si.Partitions {
			alone, err := newTestInspector(t, b.rdb, InspectorConfig{Stream: s.keys[p], Group: "g"}).Info(ctx)
			require.NoError(t, err)
			assert.Equal(t, alone.Stream, ps.Stream, "partition %d", p)
			assert.Equal(t, s.keys[p], ps.Stream)
			assert.True(t, ps.Exists)
			assert.Equal(t, s.length[p], ps.Length, "partition %d", p)
			assert.Equal(t, alone.FirstID, ps.FirstID)
			assert.Equal(t, s.backlog[p][len(s.backlog[p])-1], ps.LastID)
			assert.Equal(t, DeadLetterStreamFor(s.keys[p]), ps.DeadLetterStream)
			assert.Equal(t, int64(len(s.dead[p])), ps.DeadLetterLength, "partition %d", p)
			assert.Nil(t, ps.Partitions)
			g, ok := ps.Group("g")
			require.True(t, ok, "partition %d has group g", p)
			assert.Equal(t, int64(read), g.Pending, "partition %d", p)
			assert.Equal(t, s.backlog[p][read-1], g.LastDeliveredID)
			if b.real { // miniredis reports the stream length as lag
				assert.True(t, g.LagKnown)
				assert.Equal(t, int64(len(s.backlog[p])-read), g.Lag, "partition %d", p)
				assert.Equal(t, int64(len(s.dead[p])+read), g.EntriesRead, "partition %d", p)
			}
			firstIDs = append(firstIDs, ps.FirstID)
			lastIDs = append(lastIDs, ps.LastID)
			lastDelivered = append(lastDelivered, g.LastDeliveredID)
			deadLengths = append(deadLengths, ps.DeadLetterLength)
			lags = append(lags, g.Lag)
			entriesRead = append(entriesRead, g.EntriesRead)
		}
		sort.Slice(firstIDs, func(i, j int) bool { return compareStreamIDs(firstIDs[i], firstIDs[j]) < 0 })
		sort.Slice(lastIDs, func(i, j int) bool { return compareStreamIDs(lastIDs[i], lastIDs[j]) < 0 })
		sort.Slice(lastDelivered, func(i, j int) bool { return compareStreamIDs(lastDelivered[i], lastDelivered[j]) < 0 })

		assert.Equal(t, s.stream, si.Stream)
		assert.True(t, si.Exists)
		assert.Equal(t, sumOf(s.length), si.Length)
		assert.Equal(t, int64(s.tasks+len(s.garbage)), si.DeadLetterLength)
		assert.Equal(t, sumOf(deadLengths), si.DeadLetterLength)
		assert.Empty(t, si.DeadLetterStream, "each partition has a dead-letter stream of its own")
		assert.Equal(t, firstIDs[0], si.FirstID)
		assert.Equal(t, lastIDs[parts-1], si.LastID)
		require.Len(t, si.Groups, 1)
		g, ok := si.Group("g")
		require.True(t, ok)
		assert.Equal(t, int64(parts*read), g.Pending)
		assert.Equal(t, lastDelivered[parts-1], g.LastDeliveredID)
		assert.Equal(t, sumOf(lags), g.Lag)
		assert.Equal(t, sumOf(entriesRead), g.EntriesRead)
		if b.real {
			assert.True(t, g.LagKnown)
			assert.Equal(t, int64(40-parts*read), g.Lag)
			assert.Equal(t, int64(s.tasks+len(s.garbage)+parts*read), g.EntriesRead)
		}
		// Consumers merged by name: pending summed, the shortest idle time.
		merged := map[string]ConsumerInfo{}
		for _, ps := range si.Partitions {
			pg, _ := ps.Group("g")
			for _, c := range pg.Consumers {
				m, ok := merged[c.Name]
				if !ok {
					m = ConsumerInfo{Name: c.Name, Idle: c.Idle}
				}
				m.Pending += c.Pending
				m.Idle = min(m.Idle, c.Idle)
				merged[c.Name] = m
			}
		}
		var wantConsumers []ConsumerInfo
		for _, c := range merged {
			wantConsumers = append(wantConsumers, c)
		}
		sort.Slice(wantConsumers, func(i, j int) bool { return wantConsumers[i].Name < wantConsumers[j].Name })
		assert.Equal(t, wantConsumers, g.Consumers)
		assert.Equal(t, int64(parts*read), merged["crashed"].Pending)

		// Pending: the partitions' entries, merged oldest first.
		pending, err := in.Pending(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, pending, parts*read)
		want := map[string]bool{}
		for p := range parts {
			for _, id := range s.backlog[p][:read] {
				want[fmt.Sprintf("%d/%s", p, id)] = true
			}
		}
		got := map[string]bool{}
		for i, e := range pending {
			got[fmt.Sprintf("%d/%s", e.Partition, e.ID)] = true
			assert.Equal(t, s.keys[e.Partition], e.Stream)
			assert.Equal(t, "crashed", e.Consumer)
			assert.Equal(t, int64(1), e.Deliveries)
			if i > 0 {
				prev := pending[i-1]
				c := compareStreamIDs(prev.ID, e.ID)
				assert.True(t, c < 0 || c == 0 && prev.Partition < e.Partition, "out of order: %+v before %+v", prev, e)
			}
		}
		assert.Equal(t, want, got)
		oldest, err := in.Pending(ctx, "g", 5)
		require.NoError(t, err)
		require.Len(t, oldest, 5)
		for i, e := range oldest {
			assert.Equal(t, pending[i].ID, e.ID)
			assert.Equal(t, pending[i].Partition, e.Partition)
		}
		_, err = in.Pending(ctx, "no-such-group", 0)
		assert.ErrorContains(t, err, "NOGROUP")
		assert.ErrorContains(t, err, "none of the 4 partitions")

		// Dead letters: merged by id, then partition, each with its
		// partition and a Ref that pages.
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, s.tasks+len(s.garbage))
		perPart := make([][]string, parts)
		for i, dl := range dls {
			perPart[dl.Partition] = append(perPart[dl.Partition], dl.ID)
			assert.Equal(t, fmt.Sprintf("%d/%s", dl.Partition, dl.ID), dl.Ref)
			assert.Equal(t, DeadLetterStreamFor(s.keys[dl.Partition]), dl.DeadLetterStream)
			assert.Equal(t, s.keys[dl.Partition], dl.Stream, "dl_stream names the partition")
			assert.Equal(t, "g", dl.Group)
			if dl.Message != nil {
				assert.Equal(t, ReasonTaskNotFound, dl.Reason)
				assert.Equal(t, s.partitionOfOp(dl.Message.OperationID), dl.Partition, "%s", dl.Message.OperationID)
			} else {
				assert.Equal(t, ReasonMalformed, dl.Reason)
				assert.Equal(t, map[string]string{DataField: fmt.Sprintf("garbage in %d", dl.Partition)}, dl.Fields)
			}
			if i > 0 {
				prev := dls[i-1]
				c := compareStreamIDs(prev.ID, dl.ID)
				assert.True(t, c < 0 || c == 0 && prev.Partition < dl.Partition, "out of order: %s before %s", prev.Ref, dl.Ref)
			}
		}
		assert.Equal(t, s.dead, perPart)

		assertPagesDeadLetters(t, in, dls, func(dl DeadLetter) string { return dl.Ref })
		// A Ref as an inclusive start; a bare id starts every partition.
		from, err := in.DeadLetters(ctx, dls[4].Ref, 0)
		require.NoError(t, err)
		require.NotEmpty(t, from)
		assert.Equal(t, dls[4].Ref, from[0].Ref)
		assert.Len(t, from, len(dls)-4)
		bare, err := in.DeadLetters(ctx, "("+dls[len(dls)-1].ID, 0)
		require.NoError(t, err)
		assert.Empty(t, bare)
		_, err = in.DeadLetters(ctx, "9/1-0", 0)
		assert.ErrorContains(t, err, "partition from 0 to 3")
		_, err = in.DeadLetters(ctx, "x-1", 0)
		assert.ErrorContains(t, err, "not an id")
	})
}

// sameIDDeadLetters writes dead letters with chosen ids into the
// partitions' dead-letter streams: the same ids in several partitions, as
// concurrent consumers can produce. It returns the Refs in the merged
// order.
func sameIDDeadLetters(t *testing.T, b backend, stream string, parts int) []string {
	t.Helper()
	ctx := context.Background()
	write := []struct {
		part int
		id   string
	}{{0, "1-1"}, {1, "1-1"}, {0, "1-2"}, {2, "1-2"}, {1, "1-3"}, {3, "1-4"}}
	for _, w := range write {
		key := PartitionStream(stream, w.part, parts)
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: DeadLetterStreamFor(key), ID: w.id, Values: []any{
			DataField, fmt.Sprintf(`{"operation_id":"op-%d-%s","task_id":"t","success":true,"result":null,"error":null}`, w.part, w.id),
			DeadLetterReasonField, ReasonTaskNotFound, DeadLetterStreamField, key, DeadLetterIDField, w.id,
		}}).Err())
	}
	return []string{"0/1-1", "1/1-1", "0/1-2", "2/1-2", "1/1-3", "3/1-4"}
}

func deadRefs(dls []DeadLetter) []string {
	out := []string{}
	for _, dl := range dls {
		out = append(out, dl.Ref)
	}
	return out
}

func TestInspectorPartitionsSameIDs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.rdb)
		order := sameIDDeadLetters(t, b, stream, parts)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Partitions: parts})
		key := func(p int) string { return PartitionStream(stream, p, parts) }

		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		assert.Equal(t, order, deadRefs(dls))
		tests := []struct {
			start string
			count int
			want  []string
		}{
			{"", 2, order[:2]},
			{"(1/1-1", 2, order[2:4]},
			{"(2/1-2", 0, order[4:]},
			{"1/1-1", 1, order[1:2]},
			{"(0/1-1", 1, order[1:2]},
			{"1-2", 0, order[2:]},
			{"(1-2", 0, order[4:]},
			{"1", 0, order},
			{"(3/1-4", 0, []string{}},
		}
		for _, tt := range tests {
			got, err := in.DeadLetters(ctx, tt.start, tt.count)
			require.NoError(t, err, tt.start)
			assert.Equal(t, tt.want, deadRefs(got), "DeadLetters(%q, %d)", tt.start, tt.count)
		}

		// A bare id in two partitions is refused, and nothing moves.
		n, err := in.Redrive(ctx, "1-3", "1-1")
		require.ErrorIs(t, err, ErrAmbiguousID)
		assert.ErrorContains(t, err, "0/1-1, 1/1-1")
		assert.Zero(t, n)
		_, err = in.Purge(ctx, "1-2")
		require.ErrorIs(t, err, ErrAmbiguousID)
		left, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		assert.Equal(t, order, deadRefs(left), "nothing was moved or deleted")

		// A bare id in one partition goes back there; a Ref picks one.
		n, err = in.Redrive(ctx, "1-3", "1/1-1", "1/1-1", "2/1-1")
		require.NoError(t, err)
		assert.Equal(t, 2, n, "1/1-3 and 1/1-1, once; 2/1-1 is no dead letter")
		msgs, err := b.rdb.XRange(ctx, key(1), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		assert.Equal(t, map[string]any{DataField: `{"operation_id":"op-1-1-3","task_id":"t","success":true,"result":null,"error":null}`}, msgs[0].Values)
		assert.Contains(t, msgs[1].Values[DataField], `"op-1-1-1"`)
		// Now 1-1 is in partition 0 only.
		n, err = in.Redrive(ctx, "1-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		msgs, err = b.rdb.XRange(ctx, key(0), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		assert.Contains(t, msgs[0].Values[DataField], `"op-0-1-1"`)

		// A range between Refs: (1-2, 0) and (1-2, 2), not (1-4, 3).
		n, err = in.RedriveRange(ctx, "0/1-2", "2/1-2", 0)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		for p, want := range []int64{2, 2, 1, 0} {
			got, err := b.rdb.XLen(ctx, key(p)).Result()
			require.NoError(t, err)
			assert.Equal(t, want, got, "partition %d", p)
		}
		left, err = in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		assert.Equal(t, []string{"3/1-4"}, deadRefs(left))

		// Purge by Ref and by bare id.
		n, err = in.Purge(ctx, "3/1-4", "0/1-4", "1-9")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		_, err = in.Purge(ctx, "4/1-1")
		assert.ErrorContains(t, err, "partition from 0 to 3")
		_, err = in.Redrive(ctx, "nonsense")
		assert.ErrorContains(t, err, "not an id")
	})
}

func TestInspectorPartitionsRedrive(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 4
		s := newPartScenario(t, b.rdb, untaggedStream(t, b.rdb), parts, 12, "")
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: s.stream, Group: "g", Partitions: parts})
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, s.tasks+len(s.garbage))
		before := s.lengths(t)
		marks := make([]string, parts)
		for p, k := range s.keys {
			last, err := b.rdb.XRevRangeN(ctx, k, "+", "-", 1).Result()
			require.NoError(t, err)
			marks[p] = last[0].ID
		}

		// One by Ref: back into its own partition, once.
		n, err := in.Redrive(ctx, dls[0].Ref)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		got := streamValues(t, b.rdb, s.keys[dls[0].Partition], marks[dls[0].Partition])
		require.Len(t, got, 1)
		assert.Equal(t, dls[0].Fields, got[0])
		n, err = in.Redrive(ctx, dls[0].Ref) // (the bare id may name another partition's dead letter)
		require.NoError(t, err)
		assert.Zero(t, n)

		// A range of Refs, then a limit, in the merged order.
		n, err = in.RedriveRange(ctx, dls[1].Ref, dls[2].Ref, 0)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		n, err = in.RedriveRange(ctx, "-", "+", 1)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		left, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		assert.Equal(t, deadRefs(dls[4:]), deadRefs(left))

		// Two operators redrive everything at the same time: each dead
		// letter moves once, into its own partition.
		var wg sync.WaitGroup
		var counts [2]int
		var errs [2]error
		for i := range counts {
			wg.Go(func() { counts[i], errs[i] = in.RedriveAll(ctx) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs[:]...))
		assert.Equal(t, len(dls)-4, counts[0]+counts[1], "moved %v", counts)
		after := s.lengths(t)
		for p := range parts {
			assert.Equal(t, before[p]+int64(len(s.dead[p])), after[p], "partition %d gains its own dead letters once", p)
			var redriven, want []string
			for _, v := range streamValues(t, b.rdb, s.keys[p], marks[p]) {
				redriven = append(redriven, fmt.Sprint(v))
			}
			for _, dl := range dls {
				if dl.Partition == p {
					want = append(want, fmt.Sprint(dl.Fields))
				}
			}
			sort.Strings(redriven)
			sort.Strings(want)
			assert.Equal(t, want, redriven, "partition %d", p)
		}
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Zero(t, si.DeadLetterLength)

		// A partitioned consumer that now knows the tasks handles each
		// redriven completion once; the garbage is dead-lettered again, in
		// its partition.
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryForUnknown(s.tasks), h, s.cfg)
		stop := startConsumer(t, c)
		eventually(t, func() bool {
			return len(h.all()) >= s.tasks && c.Stats().DeadLettered == int64(len(s.garbage))
		}, "redriven entries not handled: %+v", c.Stats())
		require.NoError(t, stop())
		seen := map[string]int{}
		for _, got := range h.all() {
			seen[got.Message.OperationID]++
		}
		for i := 1; i <= s.tasks; i++ {
			assert.Equal(t, 1, seen[fmt.Sprintf("op-u%d", i)], "op-u%d handled", i)
		}
		again, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		var garbageParts []int
		for _, dl := range again {
			garbageParts = append(garbageParts, dl.Partition)
		}
		sort.Ints(garbageParts)
		assert.Equal(t, s.garbage, garbageParts)
	})
}

func TestInspectorPartitionsPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 4
		s := newPartScenario(t, b.rdb, untaggedStream(t, b.rdb), parts, 12, "")
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: s.stream, Group: "g", Partitions: parts})
		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		total := s.tasks + len(s.garbage)
		require.Len(t, dls, total)

		n, err := in.Purge(ctx, dls[0].Ref, dls[1].Ref)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		n, err = in.Purge(ctx, dls[0].Ref)
		require.NoError(t, err)
		assert.Zero(t, n)
		n, err = in.Purge(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(total-2), si.DeadLetterLength)

		n, err = in.PurgeAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, total-2, n)
		si, err = in.Info(ctx)
		require.NoError(t, err)
		assert.Zero(t, si.DeadLetterLength)
		for p, ps := range si.Partitions {
			assert.Zero(t, ps.DeadLetterLength, "partition %d", p)
		}
		assert.Equal(t, s.length, s.lengths(t), "purging leaves the partitions alone")
	})
}

func TestInspectorPartitionsSharedDeadLetterStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.rdb)
		dead := stream + ":all-dead"
		s := newPartScenario(t, b.rdb, stream, parts, 12, dead)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Group: "g", Partitions: parts, DeadLetterStream: dead})
		total := s.tasks + len(s.garbage)

		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, dead, si.DeadLetterStream)
		assert.Equal(t, int64(total), si.DeadLetterLength, "the shared stream counts once")
		for _, ps := range si.Partitions {
			assert.Equal(t, dead, ps.DeadLetterStream)
		}

		dls, err := in.DeadLetters(ctx, "", 0)
		require.NoError(t, err)
		require.Len(t, dls, total)
		perPart := make([]int, parts)
		for _, dl := range dls {
			assert.Equal(t, dead, dl.DeadLetterStream)
			assert.Equal(t, s.keys[dl.Partition], dl.Stream, "the partition is the one dl_stream names")
			if dl.Message != nil {
				assert.Equal(t, s.partitionOfOp(dl.Message.OperationID), dl.Partition)
			}
			perPart[dl.Partition]++
		}

		// Redrive puts each back into the partition it came from; a bare id
		// is unambiguous in one stream.
		before := s.lengths(t)
		n, err := in.Redrive(ctx, dls[0].ID)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		n, err = in.RedriveAll(ctx)
		require.NoError(t, err)
		assert.Equal(t, total-1, n)
		after := s.lengths(t)
		for p := range parts {
			assert.Equal(t, before[p]+int64(perPart[p]), after[p], "partition %d", p)
		}
		n64, err := b.rdb.XLen(ctx, dead).Result()
		require.NoError(t, err)
		assert.Zero(t, n64)
	})
}

func TestInspectorPartitionsPublishTest(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.rdb)
		in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Partitions: parts})
		used := map[int]bool{}
		for i := 1; i <= 8; i++ {
			task := fmt.Sprintf("t-%d", i)
			msg := Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true}
			// WithPartitions in opts is overridden by the inspector's.
			id, err := in.PublishTest(ctx, msg, WithPartitions(2))
			require.NoError(t, err)
			p, key := in.PartitionFor(task)
			assert.Equal(t, PartitionStream(stream, keys.PartitionOf(task, parts), parts), key)
			got, err := b.rdb.XRange(ctx, key, id, id).Result()
			require.NoError(t, err)
			require.Len(t, got, 1, "%s in partition %d", task, p)
			want, err := msg.MarshalJSON()
			require.NoError(t, err)
			assert.Equal(t, string(want), got[0].Values[DataField])
			used[p] = true
		}
		assert.Greater(t, len(used), 1)
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(8), si.Length)
		n, err := b.rdb.Exists(ctx, stream).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "nothing goes to the unpartitioned key")

		_, err = in.PublishTest(ctx, Message{TaskID: "t-1"})
		assert.ErrorIs(t, err, ErrMalformed)
	})
}

func TestInspectorPartitionsTail(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		clients := []struct {
			name   string
			client InspectorClient
		}{
			{"one XREAD", b.rdb},                  // a single node: one read over all partitions
			{"a reader each", plainClient{b.rdb}}, // one reader per partition, as on a cluster
		}
		for _, cl := range clients {
			t.Run(cl.name, func(t *testing.T) {
				testPartitionedTail(t, b, cl.client)
			})
		}
	})
}

func testPartitionedTail(t *testing.T, b backend, client InspectorClient) {
	ctx := context.Background()
	const parts = 4
	stream := untaggedStream(t, b.rdb)
	in := newTestInspector(t, b.rdb, InspectorConfig{Stream: stream, Partitions: parts})
	in = newTestInspector(t, client, in.Config())
	type published struct {
		part int
		id   string
	}
	var old []published
	for i := 1; i <= 8; i++ {
		task := fmt.Sprintf("t-%d", i)
		id, err := in.PublishTest(ctx, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true})
		require.NoError(t, err)
		p, _ := in.PartitionFor(task)
		old = append(old, published{p, id})
	}
	_, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: PartitionStream(stream, 2, parts), Values: []any{"other", "x"}}).Result()
	require.NoError(t, err)

	// From "0": every partition's entries, then new ones; fn's error ends
	// it.
	errEnough := errors.New("enough")
	var got []Entry
	done := make(chan error, 1)
	go func() {
		done <- in.Tail(ctx, "0", func(e Entry) error {
			got = append(got, e)
			if len(got) == 10 {
				return errEnough
			}
			return nil
		})
	}()
	_, err = in.PublishTest(ctx, Message{OperationID: "op-new", TaskID: "t-new", Success: true})
	require.NoError(t, err)
	select {
	case err := <-done:
		require.ErrorIs(t, err, errEnough)
	case <-time.After(10 * time.Second):
		t.Fatal("Tail did not return")
	}
	require.Len(t, got, 10)
	ops := map[string]int{}
	lastID := map[int]string{}
	for _, e := range got {
		assert.Equal(t, PartitionStream(stream, e.Partition, parts), e.Stream)
		if prev, ok := lastID[e.Partition]; ok {
			assert.Less(t, compareStreamIDs(prev, e.ID), 0, "partition %d out of order", e.Partition)
		}
		lastID[e.Partition] = e.ID
		if e.Message == nil {
			assert.Equal(t, 2, e.Partition)
			assert.Equal(t, map[string]string{"other": "x"}, e.Fields)
			assert.ErrorIs(t, e.DecodeErr, ErrMalformed)
			continue
		}
		p, _ := in.PartitionFor(e.Message.TaskID)
		assert.Equal(t, p, e.Partition, "%s", e.Message.OperationID)
		ops[e.Message.OperationID]++
	}
	assert.Len(t, ops, 9)
	assert.Equal(t, 1, ops["op-new"])

	// After an id: what follows it in every partition; after a Ref: what
	// follows it in the order of id, then partition.
	for _, from := range []string{old[3].id, fmt.Sprintf("%d/%s", old[3].part, old[3].id)} {
		var want []string
		for _, e := range got {
			c := compareStreamIDs(e.ID, old[3].id)
			if c > 0 || c == 0 && strings.Contains(from, "/") && e.Partition > old[3].part {
				want = append(want, fmt.Sprintf("%d/%s", e.Partition, e.ID))
			}
		}
		var after []string
		err := in.Tail(ctx, from, func(e Entry) error {
			after = append(after, fmt.Sprintf("%d/%s", e.Partition, e.ID))
			if len(after) == len(want) {
				return errEnough
			}
			return nil
		})
		require.ErrorIs(t, err, errEnough)
		sort.Strings(want)
		sort.Strings(after)
		assert.Equal(t, want, after, "Tail from %s", from)
	}

	// From "$": only new entries; nil when ctx ends.
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan Entry, 100)
	go func() {
		done <- in.Tail(tctx, "$", func(e Entry) error { seen <- e; return nil })
	}()
	var live Entry
	for i := 0; live.ID == ""; i++ {
		_, err := in.PublishTest(ctx, Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		require.NoError(t, err)
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
	assert.ErrorContains(t, in.Tail(ctx, "5/1-0", func(Entry) error { return nil }), "partition from 0 to 3")
}

// On Redis Cluster the partitions live on different masters: every command
// the inspector sends must touch one partition's keys only.
func TestInspectorPartitionsOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	rdb := cl.Client(t)
	ctx := context.Background()
	const parts = 6
	stream := fmt.Sprintf("ctest:inspector-partitions:%08x", rand.Uint32())
	masters := map[int]bool{}
	for i := range parts {
		masters[cl.MasterFor(PartitionStream(stream, i, parts))] = true
	}
	require.Len(t, masters, clusterMasters, "the partitions spread over every master")

	s := newPartScenario(t, rdb, stream, parts, 12, "")
	s.addBacklog(t, 40, 2)
	in := newTestInspector(t, rdb, InspectorConfig{Stream: stream, Group: "g", Partitions: parts})
	total := s.tasks + len(s.garbage)

	si, err := in.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, sumOf(s.length), si.Length)
	assert.Equal(t, int64(total), si.DeadLetterLength)
	g, ok := si.Group("g")
	require.True(t, ok)
	assert.Equal(t, int64(parts*2), g.Pending)
	assert.Equal(t, int64(40-parts*2), g.Lag)
	pending, err := in.Pending(ctx, "g", 0)
	require.NoError(t, err)
	assert.Len(t, pending, parts*2)
	dls, err := in.DeadLetters(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, dls, total)

	// Redrive: each into its own partition, on its own master. A bare id
	// is looked for on every master: one no other partition has (it is
	// later than any the consumer wrote).
	const lone = "9999999999999-5"
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: DeadLetterStreamFor(s.keys[4]), ID: lone, Values: []any{DataField,
		`{"operation_id":"op-lone","task_id":"t","success":true,"result":null,"error":null}`}}).Err())
	before := s.lengths(t)
	n, err := in.Redrive(ctx, dls[0].Ref, lone)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	n, err = in.RedriveAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, total-1, n)
	after := s.lengths(t)
	for p := range parts {
		want := before[p] + int64(len(s.dead[p]))
		if p == 4 {
			want++
		}
		assert.Equal(t, want, after[p], "partition %d", p)
	}

	// Tail: a reader per partition.
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan Entry, 100)
	done := make(chan error, 1)
	go func() { done <- in.Tail(tctx, "$", func(e Entry) error { seen <- e; return nil }) }()
	var live Entry
	for i := 0; live.ID == ""; i++ {
		_, err := in.PublishTest(ctx, Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		require.NoError(t, err)
		select {
		case live = <-seen:
		case <-time.After(100 * time.Millisecond):
		}
		require.Less(t, i, 100, "Tail from $ saw nothing")
	}
	p, key := in.PartitionFor(live.Message.TaskID)
	assert.Equal(t, p, live.Partition)
	assert.Equal(t, key, live.Stream)
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Tail did not return after its context ended")
	}

	// Purge: the garbage came back as dead letters? No consumer runs, so
	// put two back by hand and purge them all.
	for _, p := range []int{1, 4} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: DeadLetterStreamFor(s.keys[p]), Values: []any{DataField, "x"}}).Err())
	}
	n, err = in.PurgeAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}

// assertPagesDeadLetters pages through the dead letters three at a time,
// each page starting after the last one's ref(dl), and asserts that the
// pages together are dls.
func assertPagesDeadLetters(t *testing.T, in *Inspector, dls []DeadLetter, ref func(DeadLetter) string) {
	t.Helper()
	var paged, all []string
	next := ""
	for {
		page, err := in.DeadLetters(context.Background(), next, 3)
		require.NoError(t, err)
		for _, dl := range page {
			paged = append(paged, ref(dl))
		}
		if len(page) < 3 {
			break
		}
		next = "(" + ref(page[len(page)-1])
	}
	for _, dl := range dls {
		all = append(all, ref(dl))
	}
	assert.Equal(t, all, paged)
}
