package completion

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
			assert.Equal(t, tt.want, sameNode(tt.client, tt.a, tt.b))
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
		var paged []string
		next := ""
		for {
			page, err := in.DeadLetters(ctx, next, 3)
			require.NoError(t, err)
			for _, dl := range page {
				paged = append(paged, dl.ID)
			}
			if len(page) < 3 {
				break
			}
			next = "(" + page[len(page)-1].ID
		}
		var all []string
		for _, dl := range dls {
			all = append(all, dl.ID)
		}
		assert.Equal(t, all, paged)
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

// plainClient hides the *redis.Client, so the inspector cannot know that
// both keys are on one node.
type plainClient struct{ *redis.Client }

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
