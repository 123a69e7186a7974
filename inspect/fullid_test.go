package inspect_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

// sameMillisecond is the millisecond of the dead letters of
// TestRedriveAndPurgeTakeFullIDs.
const sameMillisecond = "1796157389285"

// msScenario is three dead letters of one millisecond, sameMillisecond-0,
// -1 and -2, written with explicit ids, as a consumer writing fast
// produces them.
type msScenario struct {
	rdb   *redis.Client
	in    *inspect.Inspector
	parts []string // the partitions' keys (the stream itself when not partitioned)
	dead  []string // the dead-letter streams
	ids   []string // the dead letters' ids
	part  []int    // the partition of each
	refs  []string // their Refs
	use   []string // how the test names each in a redrive or purge
}

// newMSScenario writes the three dead letters to a stream of parts
// partitions (the last two in partition 1 when partitioned), to each
// partition's own dead-letter stream, or (shared) to one dead-letter stream
// with another hash tag, read through a client that cannot tell it is on
// the stream's node, so that redrives take the XRANGE, XADD, XDEL path.
func newMSScenario(t *testing.T, rdb *redis.Client, parts int, shared bool) *msScenario {
	t.Helper()
	ctx := context.Background()
	s := &msScenario{rdb: rdb}
	var client inspect.Client = rdb
	cfg := inspect.Config{Partitions: parts}
	if parts == 1 {
		cfg.Stream = uniqueStream(t, rdb)
	} else {
		cfg.Stream = untaggedStream(t, rdb)
	}
	if shared {
		client = plainClient{rdb}
		cfg.DeadLetterStream = otherTagDeadStream(t, rdb, cfg.Stream)
		if parts > 1 {
			cfg.DeadLetterStream = cfg.Stream + ":all-dead"
		}
	}
	s.in = newInspector(t, client, cfg)
	s.dead = s.in.DeadLetterStreams()
	first := completion.PartitionStream(cfg.Stream, 0, parts)
	require.Equal(t, !shared, keys.TopologyOf(client).SameNode(s.dead[0], first), "the redrive path under test")
	for p := range parts {
		s.parts = append(s.parts, completion.PartitionStream(cfg.Stream, p, parts))
	}
	for i := range 3 {
		p := min(i, 1)
		if parts == 1 {
			p = 0
		}
		id := fmt.Sprintf("%s-%d", sameMillisecond, i)
		dead := s.dead[0]
		if !shared {
			dead = s.dead[p]
		}
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: dead, ID: id, Values: []any{
			completion.DataField, fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t-%d","success":true,"result":null,"error":null}`, i, i),
			completion.DeadLetterReasonField, completion.ReasonTaskNotFound,
			completion.DeadLetterStreamField, s.parts[p],
			completion.DeadLetterIDField, fmt.Sprintf("1-%d", i),
		}}).Err())
		s.ids = append(s.ids, id)
		s.part = append(s.part, p)
		ref := id
		if parts > 1 {
			ref = fmt.Sprintf("%d/%s", p, id)
		}
		s.refs = append(s.refs, ref)
		s.use = append(s.use, ref)
	}
	if parts > 1 {
		s.use[1] = s.ids[1] // a full id without its partition, in one partition only
	}
	return s
}

// deadLeft returns the ids of the dead letters left, over every
// dead-letter stream.
func (s *msScenario) deadLeft(t *testing.T) []string {
	t.Helper()
	left := []string{}
	for _, d := range s.dead {
		msgs, err := s.rdb.XRange(context.Background(), d, "-", "+").Result()
		require.NoError(t, err)
		for _, m := range msgs {
			left = append(left, m.ID)
		}
	}
	return left
}

// ops returns the operation ids in each partition.
func (s *msScenario) ops(t *testing.T) [][]string {
	t.Helper()
	out := make([][]string, len(s.parts))
	for p, k := range s.parts {
		msgs, err := s.rdb.XRange(context.Background(), k, "-", "+").Result()
		require.NoError(t, err)
		out[p] = []string{}
		for _, m := range msgs {
			require.Len(t, m.Values, 1, "only the original field comes back: %v", m.Values)
			var msg completion.Message
			require.NoError(t, msg.UnmarshalJSON([]byte(m.Values[completion.DataField].(string))))
			out[p] = append(out[p], msg.OperationID)
		}
	}
	return out
}

// assertUntouched asserts that nothing was moved or deleted.
func (s *msScenario) assertUntouched(t *testing.T) {
	t.Helper()
	assert.ElementsMatch(t, s.ids, s.deadLeft(t), "no dead letter was moved or deleted")
	for p, ops := range s.ops(t) {
		assert.Empty(t, ops, "partition %d got nothing", p)
	}
}

// TestRedriveAndPurgeTakeFullIDs: a bare millisecond names every dead
// letter of it, and Redis's XDEL deletes only the first (ms-0): a redrive
// of it used to add ms-0's copy again and again and never delete the dead
// letter. Now a redrive or purge of a bare millisecond is refused, naming
// the dead letters of that millisecond, and nothing is done; each full id
// moves (or deletes) its dead letter exactly once. Range bounds keep their
// range meaning.
func TestRedriveAndPurgeTakeFullIDs(t *testing.T) {
	setups := []struct {
		name   string
		parts  int
		shared bool
	}{
		{"one stream, script", 1, false},
		{"one stream, xrange-xadd-xdel", 1, true},
		{"4 partitions, script", 4, false},
		{"4 partitions, shared dead-letter stream, xrange-xadd-xdel", 4, true},
	}
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		for _, setup := range setups {
			t.Run(setup.name, func(t *testing.T) {
				ctx := context.Background()
				want := [][]string{{"op-0", "op-1", "op-2"}}
				if setup.parts > 1 {
					want = [][]string{{"op-0"}, {"op-1", "op-2"}, {}, {}}
				}

				t.Run("redrive", func(t *testing.T) {
					s := newMSScenario(t, b.Client, setup.parts, setup.shared)
					assertBareMillisecondRefused(t, s, func(refs ...string) (int, error) { return s.in.Redrive(ctx, refs...) })
					for i, ref := range s.use {
						n, err := s.in.Redrive(ctx, ref)
						require.NoError(t, err, ref)
						assert.Equal(t, 1, n, "redrive %s", ref)
						n, err = s.in.Redrive(ctx, ref)
						require.NoError(t, err, ref)
						assert.Zero(t, n, "a second redrive of %s moves nothing", ref)
						_, ok, err := s.in.DeadLetter(ctx, s.refs[i])
						require.NoError(t, err)
						assert.False(t, ok, "dead letter %s is gone", s.refs[i])
						assert.ElementsMatch(t, s.ids[i+1:], s.deadLeft(t), "only %s was moved", ref)
					}
					assert.Equal(t, want, s.ops(t), "each dead letter moved once, into its own partition")
				})

				t.Run("purge", func(t *testing.T) {
					s := newMSScenario(t, b.Client, setup.parts, setup.shared)
					assertBareMillisecondRefused(t, s, func(refs ...string) (int, error) { return s.in.Purge(ctx, refs...) })
					for i, ref := range s.use {
						n, err := s.in.Purge(ctx, ref)
						require.NoError(t, err, ref)
						assert.Equal(t, 1, n, "purge %s", ref)
						n, err = s.in.Purge(ctx, ref)
						require.NoError(t, err, ref)
						assert.Zero(t, n, "a second purge of %s deletes nothing", ref)
						assert.ElementsMatch(t, s.ids[i+1:], s.deadLeft(t), "only %s was deleted", ref)
					}
					for p, ops := range s.ops(t) {
						assert.Empty(t, ops, "purging leaves partition %d alone", p)
					}
				})

				t.Run("a range of the millisecond", func(t *testing.T) {
					s := newMSScenario(t, b.Client, setup.parts, setup.shared)
					page, err := s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: sameMillisecond})
					require.NoError(t, err)
					assert.Equal(t, s.refs, deadRefs(page.DeadLetters), "a bare millisecond starts a range at its first id")
					page, err = s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: sameMillisecond + "-1"})
					require.NoError(t, err)
					assert.Equal(t, s.refs[1:], deadRefs(page.DeadLetters))
					n, err := s.in.RedriveRange(ctx, sameMillisecond, sameMillisecond, 0)
					require.NoError(t, err)
					assert.Equal(t, 3, n, "a bare millisecond as both bounds covers it whole")
					n, err = s.in.RedriveRange(ctx, sameMillisecond, sameMillisecond, 0)
					require.NoError(t, err)
					assert.Zero(t, n)
					assert.Empty(t, s.deadLeft(t))
					assert.Equal(t, want, s.ops(t))
				})
			})
		}
	})
}

// assertBareMillisecondRefused asserts that op (a redrive or a purge) of
// the bare millisecond, alone or with a full id, is refused with an error
// naming the millisecond's dead letters, and that nothing is done.
func assertBareMillisecondRefused(t *testing.T, s *msScenario, op func(refs ...string) (int, error)) {
	t.Helper()
	ctx := context.Background()
	for _, refs := range [][]string{{sameMillisecond}, {s.use[0], sameMillisecond}, {sameMillisecond, s.use[0]}} {
		n, err := op(refs...)
		require.Error(t, err, "%v", refs)
		assert.Zero(t, n, "%v", refs)
		assert.ErrorContains(t, err, fmt.Sprintf("%q is not a full dead-letter id", sameMillisecond))
		assert.ErrorContains(t, err, "that millisecond holds "+s.refs[0]+", "+s.refs[1]+", "+s.refs[2])
		assert.ErrorContains(t, err, "nothing was done")
		assert.NotErrorIs(t, err, inspect.ErrNotRedrivable)
		assert.NotErrorIs(t, err, inspect.ErrAmbiguousID)
		s.assertUntouched(t)
	}
	if len(s.parts) > 1 {
		// A bare millisecond of one partition names that partition's only.
		_, err := op("1/" + sameMillisecond)
		require.Error(t, err)
		assert.ErrorContains(t, err, "that millisecond holds "+s.refs[1]+", "+s.refs[2]+";")
		_, err = op("3/" + sameMillisecond)
		assert.ErrorContains(t, err, "there is none in that millisecond")
		s.assertUntouched(t)
	}
	// A millisecond without dead letters is refused all the same.
	_, err := op("1796157389286")
	assert.ErrorContains(t, err, "there is none in that millisecond")
	// DeadLetter and Entry take full ids too.
	_, _, err = s.in.DeadLetter(ctx, sameMillisecond)
	assert.ErrorContains(t, err, "not a full dead-letter id")
	_, _, err = s.in.Entry(ctx, sameMillisecond)
	assert.ErrorContains(t, err, "not a full id")
	s.assertUntouched(t)
}
