package inspect_test

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

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

// partScenario is a partitioned stream with a history made by a real
// partitioned Consumer: poison it dead-lettered in every partition, then
// (addBacklog) a backlog of which a crashed consumer read some of every
// partition.
type partScenario struct {
	rdb     redis.UniversalClient
	stream  string
	parts   int
	keys    []string          // partition keys
	cfg     completion.Config // the consumer's
	tasks   int               // unknown tasks t-u1 .. t-u<tasks> among the poison
	garbage []int             // partitions an undecodable entry went to
	length  []int64           // entries per partition
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
		s.keys = append(s.keys, completion.PartitionStream(stream, i, parts))
	}
	for i := 1; i <= tasks; i++ {
		task := fmt.Sprintf("t-u%d", i)
		_, err := completion.Publish(ctx, rdb, stream, completion.Message{OperationID: fmt.Sprintf("op-u%d", i), TaskID: task, Success: true,
			Result: []byte(fmt.Sprintf(`{"n":%d}`, i))}, completion.WithPartitions(parts))
		require.NoError(t, err)
		s.length[keys.PartitionOf(task, parts)]++
	}
	s.garbage = []int{0, parts - 1}
	for _, p := range s.garbage {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.keys[p], Values: []any{completion.DataField, fmt.Sprintf("garbage in %d", p)}}).Err())
		s.length[p]++
	}
	s.cfg = testConfig(stream)
	s.cfg.Partitions = parts
	s.cfg.DeadLetterStream = dead
	c := newTestConsumer(t, rdb, &completion.MemoryRegistry{}, newRecorder(), s.cfg)
	stop := startConsumer(t, c)
	eventually(t, func() bool {
		if c.Stats().DeadLettered != int64(tasks+len(s.garbage)) {
			return false
		}
		for _, k := range s.keys {
			if pendingCount(t, rdb, k, "g") != 0 {
				return false
			}
		}
		return true
	}, "poison not dead-lettered: %+v", c.Stats())
	require.NoError(t, stop())
	if dead == "" {
		for p, k := range s.keys {
			msgs, err := rdb.XRange(ctx, completion.DeadLetterStreamFor(k), "-", "+").Result()
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
		id, err := completion.Publish(ctx, s.rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true}, completion.WithPartitions(s.parts))
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

// assertOrdered asserts that b comes after a in the order of id, then
// partition.
func assertOrdered(t *testing.T, aID string, aPart int, bID string, bPart int) {
	t.Helper()
	c := compareIDs(aID, bID)
	assert.True(t, c < 0 || c == 0 && aPart < bPart, "out of order: %d/%s before %d/%s", aPart, aID, bPart, bID)
}

func TestPartitionsInfoPendingDeadLetters(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts, read = 4, 3
		s := newPartScenario(t, b.Client, untaggedStream(t, b.Client), parts, 12, "")
		s.addBacklog(t, 40, read)
		in := newInspector(t, b.Client, inspect.Config{Stream: s.stream, Group: "g", Partitions: parts})

		// Info: each partition as an Inspector of that one stream sees it,
		// and the totals are their sums.
		si, err := in.Info(ctx)
		require.NoError(t, err)
		require.Len(t, si.Partitions, parts)
		var firstIDs, lastIDs, lastDelivered []string
		var deadLengths, lags, entriesRead []int64
		for p, ps := range si.Partitions {
			alone, err := newInspector(t, b.Client, inspect.Config{Stream: s.keys[p], Group: "g"}).Info(ctx)
			require.NoError(t, err)
			assert.Equal(t, alone.Stream, ps.Stream, "partition %d", p)
			assert.Equal(t, s.keys[p], ps.Stream)
			assert.True(t, ps.Exists)
			assert.Equal(t, s.length[p], ps.Length, "partition %d", p)
			assert.Equal(t, alone.FirstID, ps.FirstID)
			assert.Equal(t, s.backlog[p][len(s.backlog[p])-1], ps.LastID)
			assert.Equal(t, completion.DeadLetterStreamFor(s.keys[p]), ps.DeadLetterStream)
			assert.Equal(t, int64(len(s.dead[p])), ps.DeadLetterLength, "partition %d", p)
			assert.Nil(t, ps.Partitions)
			assert.Empty(t, ps.Owner, "no consumer runs")
			g, ok := ps.Group("g")
			require.True(t, ok, "partition %d has group g", p)
			assert.Equal(t, int64(read), g.Pending, "partition %d", p)
			assert.Equal(t, s.backlog[p][read-1], g.LastDeliveredID)
			if b.Real { // miniredis reports the stream length as lag
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
		byID := func(ids []string) func(i, j int) bool {
			return func(i, j int) bool { return compareIDs(ids[i], ids[j]) < 0 }
		}
		sort.Slice(firstIDs, byID(firstIDs))
		sort.Slice(lastIDs, byID(lastIDs))
		sort.Slice(lastDelivered, byID(lastDelivered))

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
		if b.Real {
			assert.True(t, g.LagKnown)
			assert.Equal(t, int64(40-parts*read), g.Lag)
			assert.Equal(t, int64(s.tasks+len(s.garbage)+parts*read), g.EntriesRead)
		}
		// Consumers merged by name: pending summed, the shortest idle time.
		merged := map[string]inspect.ConsumerInfo{}
		for _, ps := range si.Partitions {
			pg, _ := ps.Group("g")
			for _, c := range pg.Consumers {
				m, ok := merged[c.Name]
				if !ok {
					m = inspect.ConsumerInfo{Name: c.Name, Idle: c.Idle}
				}
				m.Pending += c.Pending
				m.Idle = min(m.Idle, c.Idle)
				merged[c.Name] = m
			}
		}
		var wantConsumers []inspect.ConsumerInfo
		for _, c := range merged {
			wantConsumers = append(wantConsumers, c)
		}
		sort.Slice(wantConsumers, func(i, j int) bool { return wantConsumers[i].Name < wantConsumers[j].Name })
		assert.Equal(t, wantConsumers, g.Consumers)
		assert.Equal(t, int64(parts*read), merged["crashed"].Pending)

		// Pending: the partitions' entries, merged oldest first.
		pending, err := in.Pending(ctx, inspect.PendingQuery{})
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
			assert.Equal(t, fmt.Sprintf("%d/%s", e.Partition, e.ID), e.Ref)
			assert.Equal(t, s.keys[e.Partition], e.Stream)
			assert.Equal(t, "crashed", e.Consumer)
			assert.Equal(t, int64(1), e.Deliveries)
			if i > 0 {
				assertOrdered(t, pending[i-1].ID, pending[i-1].Partition, e.ID, e.Partition)
			}
		}
		assert.Equal(t, want, got)
		oldest, err := in.Pending(ctx, inspect.PendingQuery{Group: "g", Count: 5})
		require.NoError(t, err)
		require.Len(t, oldest, 5)
		for i, e := range oldest {
			assert.Equal(t, pending[i].ID, e.ID)
			assert.Equal(t, pending[i].Partition, e.Partition)
		}
		// Paging by Ref over the partitions, and from a Ref inclusive.
		var paged []string
		q := inspect.PendingQuery{Count: 5}
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			page, err := in.Pending(ctx, q)
			require.NoError(t, err)
			for _, e := range page {
				paged = append(paged, e.Ref)
			}
			if len(page) < q.Count {
				break
			}
			q.Start = "(" + page[len(page)-1].Ref
		}
		var all []string
		for _, e := range pending {
			all = append(all, e.Ref)
		}
		assert.Equal(t, all, paged)
		from, err := in.Pending(ctx, inspect.PendingQuery{Start: pending[4].Ref})
		require.NoError(t, err)
		require.Len(t, from, len(pending)-4)
		assert.Equal(t, pending[4].Ref, from[0].Ref)
		byCrashed, err := in.Pending(ctx, inspect.PendingQuery{Consumer: "crashed", Count: 2})
		require.NoError(t, err)
		assert.Equal(t, all[:2], []string{byCrashed[0].Ref, byCrashed[1].Ref})
		_, err = in.Pending(ctx, inspect.PendingQuery{Group: "no-such-group"})
		assert.ErrorContains(t, err, "NOGROUP")
		assert.ErrorContains(t, err, "none of the 4 partitions")
		assert.ErrorContains(t, err, `its one group is "g"`)
		_, err = in.Pending(ctx, inspect.PendingQuery{Start: "7/1-0"})
		assert.ErrorContains(t, err, "partition from 0 to 3")

		// A group only some partitions have: the others are left out.
		require.NoError(t, b.Client.XGroupCreate(ctx, s.keys[2], "partial", "0").Err())
		require.NoError(t, b.Client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "partial", Consumer: "x", Streams: []string{s.keys[2], ">"}, Count: 2, Block: -1}).Err())
		partial, err := in.Pending(ctx, inspect.PendingQuery{Group: "partial"})
		require.NoError(t, err)
		require.Len(t, partial, 2)
		for _, e := range partial {
			assert.Equal(t, 2, e.Partition)
		}
		_, err = in.Pending(ctx, inspect.PendingQuery{Group: "no-such-group"})
		assert.ErrorContains(t, err, `its groups are ["g" "partial"]`)

		// Dead letters: merged by id, then partition, each with its
		// partition and a Ref that pages.
		dls := allDeadLetters(t, in)
		require.Len(t, dls, s.tasks+len(s.garbage))
		perPart := make([][]string, parts)
		for i, dl := range dls {
			perPart[dl.Partition] = append(perPart[dl.Partition], dl.ID)
			assert.Equal(t, fmt.Sprintf("%d/%s", dl.Partition, dl.ID), dl.Ref)
			assert.Equal(t, completion.DeadLetterStreamFor(s.keys[dl.Partition]), dl.DeadLetterStream)
			assert.Equal(t, s.keys[dl.Partition], dl.Stream, "dl_stream names the partition")
			assert.Equal(t, "g", dl.Group)
			if dl.Message != nil {
				assert.Equal(t, completion.ReasonTaskNotFound, dl.Reason)
				assert.Equal(t, s.partitionOfOp(dl.Message.OperationID), dl.Partition, "%s", dl.Message.OperationID)
			} else {
				assert.Equal(t, completion.ReasonMalformed, dl.Reason)
				assert.Equal(t, map[string]string{completion.DataField: fmt.Sprintf("garbage in %d", dl.Partition)}, dl.Fields)
			}
			if i > 0 {
				assertOrdered(t, dls[i-1].ID, dls[i-1].Partition, dl.ID, dl.Partition)
			}
			// One by Ref, and its entry, by the partition and source id.
			one, ok, err := in.DeadLetter(ctx, dl.Ref)
			require.NoError(t, err)
			require.True(t, ok, dl.Ref)
			assert.Equal(t, dl, one)
			e, ok, err := in.Entry(ctx, fmt.Sprintf("%d/%s", dl.Partition, dl.SourceID))
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, dl.Fields, e.Fields)
			assert.Equal(t, dl.Partition, e.Partition)
			assert.Equal(t, s.keys[dl.Partition], e.Stream)
		}
		assert.Equal(t, s.dead, perPart)
		_, _, err = in.Entry(ctx, dls[0].SourceID)
		assert.ErrorContains(t, err, "names no partition")
		reasons, err := in.DeadLetterReasons(ctx)
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{completion.ReasonTaskNotFound: int64(s.tasks), completion.ReasonMalformed: int64(len(s.garbage))}, reasons)
		malformed, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Reason: completion.ReasonMalformed})
		require.NoError(t, err)
		require.Len(t, malformed.DeadLetters, len(s.garbage))

		assertPagesDeadLetters(t, in, dls, func(dl inspect.DeadLetter) string { return dl.Ref })
		// A Ref as an inclusive start; a bare id starts every partition.
		from2, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: dls[4].Ref})
		require.NoError(t, err)
		require.NotEmpty(t, from2.DeadLetters)
		assert.Equal(t, dls[4].Ref, from2.DeadLetters[0].Ref)
		assert.Len(t, from2.DeadLetters, len(dls)-4)
		bare, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: "(" + dls[len(dls)-1].ID})
		require.NoError(t, err)
		assert.Empty(t, bare.DeadLetters)
		_, err = in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: "9/1-0"})
		assert.ErrorContains(t, err, "partition from 0 to 3")
		_, err = in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: "x-1"})
		assert.ErrorContains(t, err, "not an id")
	})
}

// sameIDDeadLetters writes dead letters with chosen ids into the
// partitions' dead-letter streams: the same ids in several partitions, as
// concurrent consumers can produce. It returns the Refs in the merged
// order.
func sameIDDeadLetters(t *testing.T, rdb *redis.Client, stream string, parts int) []string {
	t.Helper()
	ctx := context.Background()
	write := []struct {
		part int
		id   string
	}{{0, "1-1"}, {1, "1-1"}, {0, "1-2"}, {2, "1-2"}, {1, "1-3"}, {3, "1-4"}}
	for _, w := range write {
		key := completion.PartitionStream(stream, w.part, parts)
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(key), ID: w.id, Values: []any{
			completion.DataField, fmt.Sprintf(`{"operation_id":"op-%d-%s","task_id":"t","success":true,"result":null,"error":null}`, w.part, w.id),
			completion.DeadLetterReasonField, completion.ReasonTaskNotFound, completion.DeadLetterStreamField, key, completion.DeadLetterIDField, w.id,
		}}).Err())
	}
	return []string{"0/1-1", "1/1-1", "0/1-2", "2/1-2", "1/1-3", "3/1-4"}
}

func TestPartitionsSameIDs(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.Client)
		order := sameIDDeadLetters(t, b.Client, stream, parts)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Partitions: parts})
		key := func(p int) string { return completion.PartitionStream(stream, p, parts) }

		assert.Equal(t, order, deadRefs(allDeadLetters(t, in)))
		tests := []struct {
			start string
			count int
			want  []string
			next  string
		}{
			{"", 2, order[:2], "(" + order[1]},
			{"(1/1-1", 2, order[2:4], "(" + order[3]},
			{"(2/1-2", 0, order[4:], ""},
			{"1/1-1", 1, order[1:2], "(" + order[1]},
			{"(0/1-1", 1, order[1:2], "(" + order[1]},
			{"1-2", 0, order[2:], ""},
			{"(1-2", 0, order[4:], ""},
			{"1", 0, order, ""},
			{"(3/1-4", 0, []string{}, ""},
			{"(2/1-2", 2, order[4:], ""}, // a full last page has no next
		}
		for _, tt := range tests {
			got, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: tt.start, Count: tt.count})
			require.NoError(t, err, tt.start)
			assert.Equal(t, tt.want, deadRefs(got.DeadLetters), "DeadLetters(%q, %d)", tt.start, tt.count)
			assert.Equal(t, tt.next, got.Next, "DeadLetters(%q, %d).Next", tt.start, tt.count)
		}

		// A bare id in two partitions is refused, and nothing moves.
		n, err := in.Redrive(ctx, "1-3", "1-1")
		require.ErrorIs(t, err, inspect.ErrAmbiguousID)
		assert.ErrorContains(t, err, "0/1-1, 1/1-1")
		assert.Zero(t, n)
		_, err = in.Purge(ctx, "1-2")
		require.ErrorIs(t, err, inspect.ErrAmbiguousID)
		_, _, err = in.DeadLetter(ctx, "1-2")
		require.ErrorIs(t, err, inspect.ErrAmbiguousID)
		assert.Equal(t, order, deadRefs(allDeadLetters(t, in)), "nothing was moved or deleted")
		dl, ok, err := in.DeadLetter(ctx, "1-3")
		require.NoError(t, err)
		require.True(t, ok, "a bare id in one partition")
		assert.Equal(t, "1/1-3", dl.Ref)
		_, ok, err = in.DeadLetter(ctx, "2/1-1")
		require.NoError(t, err)
		assert.False(t, ok)

		// A bare id in one partition goes back there; a Ref picks one.
		n, err = in.Redrive(ctx, "1-3", "1/1-1", "1/1-1", "2/1-1")
		require.NoError(t, err)
		assert.Equal(t, 2, n, "1/1-3 and 1/1-1, once; 2/1-1 is no dead letter")
		msgs, err := b.Client.XRange(ctx, key(1), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		assert.Equal(t, map[string]any{completion.DataField: `{"operation_id":"op-1-1-3","task_id":"t","success":true,"result":null,"error":null}`}, msgs[0].Values)
		assert.Contains(t, msgs[1].Values[completion.DataField], `"op-1-1-1"`)
		// Now 1-1 is in partition 0 only.
		n, err = in.Redrive(ctx, "1-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		msgs, err = b.Client.XRange(ctx, key(0), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		assert.Contains(t, msgs[0].Values[completion.DataField], `"op-0-1-1"`)

		// A range between Refs: (1-2, 0) and (1-2, 2), not (1-4, 3).
		n, err = in.RedriveRange(ctx, "0/1-2", "2/1-2", 0)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		for p, want := range []int64{2, 2, 1, 0} {
			got, err := b.Client.XLen(ctx, key(p)).Result()
			require.NoError(t, err)
			assert.Equal(t, want, got, "partition %d", p)
		}
		assert.Equal(t, []string{"3/1-4"}, deadRefs(allDeadLetters(t, in)))

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

func TestPartitionsRedrive(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts = 4
		s := newPartScenario(t, b.Client, untaggedStream(t, b.Client), parts, 12, "")
		in := newInspector(t, b.Client, inspect.Config{Stream: s.stream, Group: "g", Partitions: parts})
		dls := allDeadLetters(t, in)
		require.Len(t, dls, s.tasks+len(s.garbage))
		before := s.lengths(t)
		marks := make([]string, parts)
		for p, k := range s.keys {
			marks[p] = lastID(t, b.Client, k)
		}

		// One by Ref: back into its own partition, once.
		n, err := in.Redrive(ctx, dls[0].Ref)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		got := streamValues(t, b.Client, s.keys[dls[0].Partition], marks[dls[0].Partition])
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
		assert.Equal(t, deadRefs(dls[4:]), deadRefs(allDeadLetters(t, in)))

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
			for _, v := range streamValues(t, b.Client, s.keys[p], marks[p]) {
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
		c := newTestConsumer(t, b.Client, registryForUnknown(s.tasks), h, s.cfg)
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
		var garbageParts []int
		for _, dl := range allDeadLetters(t, in) {
			garbageParts = append(garbageParts, dl.Partition)
		}
		sort.Ints(garbageParts)
		assert.Equal(t, s.garbage, garbageParts)
		// By reason, over the partitions.
		n, err = in.RedriveReason(ctx, completion.ReasonMalformed)
		require.NoError(t, err)
		assert.Equal(t, len(s.garbage), n)
		assert.Empty(t, allDeadLetters(t, in))
	})
}

func TestPartitionsPurge(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts = 4
		s := newPartScenario(t, b.Client, untaggedStream(t, b.Client), parts, 12, "")
		in := newInspector(t, b.Client, inspect.Config{Stream: s.stream, Group: "g", Partitions: parts})
		dls := allDeadLetters(t, in)
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

func TestPartitionsSharedDeadLetterStream(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.Client)
		dead := stream + ":all-dead"
		s := newPartScenario(t, b.Client, stream, parts, 12, dead)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Group: "g", Partitions: parts, DeadLetterStream: dead})
		total := s.tasks + len(s.garbage)

		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, dead, si.DeadLetterStream)
		assert.Equal(t, int64(total), si.DeadLetterLength, "the shared stream counts once")
		for _, ps := range si.Partitions {
			assert.Equal(t, dead, ps.DeadLetterStream)
		}

		dls := allDeadLetters(t, in)
		require.Len(t, dls, total)
		perPart := make([]int, parts)
		for _, dl := range dls {
			assert.Equal(t, dead, dl.DeadLetterStream)
			assert.Equal(t, s.keys[dl.Partition], dl.Stream, "the partition is the one dl_stream names")
			assert.Equal(t, fmt.Sprintf("%d/%s", dl.Partition, dl.ID), dl.Ref)
			if dl.Message != nil {
				assert.Equal(t, s.partitionOfOp(dl.Message.OperationID), dl.Partition)
			}
			perPart[dl.Partition]++
			one, ok, err := in.DeadLetter(ctx, dl.Ref)
			require.NoError(t, err)
			require.True(t, ok, dl.Ref)
			assert.Equal(t, dl, one)
			other := fmt.Sprintf("%d/%s", (dl.Partition+1)%parts, dl.ID)
			_, ok, err = in.DeadLetter(ctx, other)
			require.NoError(t, err)
			assert.False(t, ok, "%s names another partition's dead letter", other)
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
		n64, err := b.Client.XLen(ctx, dead).Result()
		require.NoError(t, err)
		assert.Zero(t, n64)
	})
}

func TestPartitionsPublishTest(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const parts = 4
		stream := untaggedStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Partitions: parts})
		used := map[int]bool{}
		for i := 1; i <= 8; i++ {
			task := fmt.Sprintf("t-%d", i)
			msg := completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true}
			// WithPartitions in opts is overridden by the inspector's.
			id, err := in.PublishTest(ctx, msg, completion.WithPartitions(2))
			require.NoError(t, err)
			p, key := in.PartitionFor(task)
			assert.Equal(t, completion.PartitionStream(stream, keys.PartitionOf(task, parts), parts), key)
			got, err := b.Client.XRange(ctx, key, id, id).Result()
			require.NoError(t, err)
			require.Len(t, got, 1, "%s in partition %d", task, p)
			want, err := msg.MarshalJSON()
			require.NoError(t, err)
			assert.Equal(t, string(want), got[0].Values[completion.DataField])
			used[p] = true
			e, ok, err := in.Entry(ctx, fmt.Sprintf("%d/%s", p, id))
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, fmt.Sprintf("%d/%s", p, id), e.Ref)
			assert.Equal(t, msg.OperationID, e.Message.OperationID)
		}
		assert.Greater(t, len(used), 1)
		si, err := in.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(8), si.Length)
		n, err := b.Client.Exists(ctx, stream).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "nothing goes to the unpartitioned key")

		_, err = in.PublishTest(ctx, completion.Message{TaskID: "t-1"})
		assert.ErrorIs(t, err, completion.ErrMalformed)
	})
}

func TestPartitionsTail(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		clients := []struct {
			name   string
			client inspect.Client
		}{
			{"one XREAD", b.Client},                  // a single node: one read over all partitions
			{"a reader each", plainClient{b.Client}}, // one reader per partition, as on a cluster
		}
		for _, cl := range clients {
			t.Run(cl.name, func(t *testing.T) {
				testPartitionedTail(t, b.Client, cl.client)
			})
		}
	})
}

func testPartitionedTail(t *testing.T, rdb *redis.Client, client inspect.Client) {
	ctx := context.Background()
	const parts = 4
	stream := untaggedStream(t, rdb)
	in := newInspector(t, client, inspect.Config{Stream: stream, Partitions: parts})
	type published struct {
		part int
		id   string
	}
	var old []published
	for i := 1; i <= 8; i++ {
		task := fmt.Sprintf("t-%d", i)
		id, err := in.PublishTest(ctx, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true})
		require.NoError(t, err)
		p, _ := in.PartitionFor(task)
		old = append(old, published{p, id})
	}
	_, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.PartitionStream(stream, 2, parts), Values: []any{"other", "x"}}).Result()
	require.NoError(t, err)

	// From "0": every partition's entries, then new ones; fn's error ends
	// it.
	errEnough := errors.New("enough")
	var got []inspect.Entry
	done := make(chan error, 1)
	go func() {
		done <- in.Tail(ctx, "0", func(e inspect.Entry) error {
			got = append(got, e)
			if len(got) == 10 {
				return errEnough
			}
			return nil
		})
	}()
	_, err = in.PublishTest(ctx, completion.Message{OperationID: "op-new", TaskID: "t-new", Success: true})
	require.NoError(t, err)
	select {
	case err := <-done:
		require.ErrorIs(t, err, errEnough)
	case <-time.After(10 * time.Second):
		t.Fatal("Tail did not return")
	}
	require.Len(t, got, 10)
	ops := map[string]int{}
	lastInPart := map[int]string{}
	for _, e := range got {
		assert.Equal(t, completion.PartitionStream(stream, e.Partition, parts), e.Stream)
		assert.Equal(t, fmt.Sprintf("%d/%s", e.Partition, e.ID), e.Ref)
		if prev, ok := lastInPart[e.Partition]; ok {
			assert.Less(t, compareIDs(prev, e.ID), 0, "partition %d out of order", e.Partition)
		}
		lastInPart[e.Partition] = e.ID
		if e.Message == nil {
			assert.Equal(t, 2, e.Partition)
			assert.Equal(t, map[string]string{"other": "x"}, e.Fields)
			assert.ErrorIs(t, e.DecodeErr, completion.ErrMalformed)
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
			c := compareIDs(e.ID, old[3].id)
			if c > 0 || c == 0 && strings.Contains(from, "/") && e.Partition > old[3].part {
				want = append(want, e.Ref)
			}
		}
		var after []string
		err := in.Tail(ctx, from, func(e inspect.Entry) error {
			after = append(after, e.Ref)
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
	seen := make(chan inspect.Entry, 100)
	go func() {
		done <- in.Tail(tctx, "$", func(e inspect.Entry) error { seen <- e; return nil })
	}()
	var live inspect.Entry
	for i := 0; live.ID == ""; i++ {
		_, err := in.PublishTest(ctx, completion.Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
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
	assert.ErrorContains(t, in.Tail(ctx, "5/1-0", func(inspect.Entry) error { return nil }), "partition from 0 to 3")
}
