package inspect_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// reasonScenario is a stream whose consumer dead-lettered entries of three
// reasons: unknown tasks, undecodable entries and entries too big to copy.
type reasonScenario struct {
	in     *inspect.Inspector
	stream string
	dead   string
	dls    []inspect.DeadLetter // every dead letter, in order
	big    string               // the blob of the oversize entries
}

const (
	reasonTasks    = 5 // task_not_found: op-u1 .. op-u5
	reasonGarbage  = 2 // malformed
	reasonOversize = 2 // oversize: op-big1, op-big2
)

// newReasonScenario publishes the entries, interleaved, and runs a
// consumer with an empty registry and MaxPayloadBytes 1024 until it has
// dead-lettered them all. With script false the dead-letter stream has
// another hash tag than the stream and the inspector a client that cannot
// tell they are on one node, so that it redrives with XRANGE, XADD, XDEL.
func newReasonScenario(t *testing.T, rdb *redis.Client, script bool) *reasonScenario {
	t.Helper()
	ctx := context.Background()
	s := &reasonScenario{stream: uniqueStream(t, rdb), big: strings.Repeat("x", 1100)}
	cfg := testConfig(s.stream)
	cfg.MaxPayloadBytes = 1024
	var client inspect.Client = rdb
	if script {
		s.dead = completion.DeadLetterStreamFor(s.stream)
	} else {
		s.dead = otherTagDeadStream(t, rdb, s.stream)
		cfg.DeadLetterStream = s.dead
		client = plainClient{rdb}
	}
	next := map[string]int{}
	add := func(kind string) {
		next[kind]++
		n := next[kind]
		var err error
		switch kind {
		case "task":
			_, err = completion.Publish(ctx, rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-u%d", n), TaskID: fmt.Sprintf("t-u%d", n), Success: true},
				completion.WithField("tenant", "acme"))
		case "garbage":
			err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, Values: []any{completion.DataField, fmt.Sprintf("garbage %d", n)}}).Err()
		case "big":
			_, err = completion.Publish(ctx, rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-big%d", n), TaskID: fmt.Sprintf("t-big%d", n), Success: true},
				completion.WithField("blob", s.big))
		}
		require.NoError(t, err)
	}
	for _, kind := range []string{"task", "garbage", "task", "big", "task", "garbage", "task", "big", "task"} {
		add(kind)
	}
	c := newTestConsumer(t, rdb, &completion.MemoryRegistry{}, newRecorder(), cfg)
	stop := startConsumer(t, c)
	const total = reasonTasks + reasonGarbage + reasonOversize
	eventually(t, func() bool {
		return c.Stats().DeadLettered == total && pendingCount(t, rdb, s.stream, "g") == 0
	}, "not all dead-lettered: %+v", c.Stats())
	require.NoError(t, stop())
	s.in = newInspector(t, client, inspect.Config{Stream: s.stream, Group: "g", DeadLetterStream: cfg.DeadLetterStream})
	s.dls = allDeadLetters(t, s.in)
	require.Len(t, s.dls, total)
	return s
}

// ofReason returns the scenario's dead letters of reason, in order.
func (s *reasonScenario) ofReason(reason string) []inspect.DeadLetter {
	var out []inspect.DeadLetter
	for _, dl := range s.dls {
		if dl.Reason == reason {
			out = append(out, dl)
		}
	}
	return out
}

func TestDeadLettersByReason(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newReasonScenario(t, b.Client, true)

		reasons, err := s.in.DeadLetterReasons(ctx)
		require.NoError(t, err)
		assert.Equal(t, map[string]int64{
			completion.ReasonTaskNotFound: reasonTasks,
			completion.ReasonMalformed:    reasonGarbage,
			completion.ReasonOversize:     reasonOversize,
		}, reasons)

		for _, reason := range []string{completion.ReasonTaskNotFound, completion.ReasonMalformed, completion.ReasonOversize} {
			page, err := s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Reason: reason})
			require.NoError(t, err)
			assert.Equal(t, deadRefs(s.ofReason(reason)), deadRefs(page.DeadLetters), "reason %s, in the order of all dead letters", reason)
			assert.Empty(t, page.Next)

			// A page at a time: each page at most Count, together all of
			// them; the last page may be empty (a Reason's page cannot
			// know whether others of the reason follow).
			var paged []string
			start := ""
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10, "Next does not end")
				page, err := s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: start, Count: 2, Reason: reason})
				require.NoError(t, err)
				assert.LessOrEqual(t, len(page.DeadLetters), 2)
				for _, dl := range page.DeadLetters {
					assert.Equal(t, reason, dl.Reason)
					paged = append(paged, dl.Ref)
				}
				if page.Next == "" {
					break
				}
				require.NotEmpty(t, page.DeadLetters, "a page without dead letters of the reason is the last")
				start = page.Next
			}
			assert.Equal(t, deadRefs(s.ofReason(reason)), paged, "reason %s paged by 2", reason)
		}
		page, err := s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Reason: "no-such-reason"})
		require.NoError(t, err)
		assert.Empty(t, page.DeadLetters)
		assert.Empty(t, page.Next)
		_, err = s.in.DeadLetters(ctx, inspect.DeadLetterQuery{Count: -1})
		assert.ErrorContains(t, err, "count is -1")

		// The oversize dead letters hold what the entry was, not its
		// fields: they cannot be redriven.
		for _, dl := range s.ofReason(completion.ReasonOversize) {
			assert.False(t, dl.Redrivable(), "%s", dl.Ref)
			assert.Empty(t, dl.Fields)
			assert.Equal(t, int64(2), dl.FieldCount)
			assert.Greater(t, dl.Size, int64(1100))
			assert.Contains(t, dl.Excerpt, `"operation_id":"op-big`)
			assert.Nil(t, dl.Message)
			assert.ErrorIs(t, dl.DecodeErr, completion.ErrMalformed)
			assert.NotEmpty(t, dl.SourceID)
		}
		for _, dl := range s.ofReason(completion.ReasonTaskNotFound) {
			assert.True(t, dl.Redrivable(), "%s", dl.Ref)
			assert.Equal(t, "acme", dl.Fields["tenant"])
			assert.Zero(t, dl.Size)
			assert.Zero(t, dl.FieldCount)
			assert.Empty(t, dl.Excerpt)
		}
	})
}

// TestDeadLettersNext: Next is the start of the next page, "" when there
// are no more, also when the last page is full.
func TestDeadLettersNext(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream})
		const total = 9
		for i := range total {
			require.NoError(t, b.Client.XAdd(ctx, &redis.XAddArgs{Stream: in.DeadLetterStreams()[0], Values: []any{
				completion.DataField, fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t","success":true,"result":null,"error":null}`, i),
				completion.DeadLetterReasonField, completion.ReasonTaskNotFound,
			}}).Err())
		}
		all := allDeadLetters(t, in)
		require.Len(t, all, total)
		refs := deadRefs(all)

		for _, count := range []int{1, 2, 3, 4, 8, 9, 10} {
			t.Run(fmt.Sprintf("count %d", count), func(t *testing.T) {
				var paged []string
				start := ""
				for pages := 0; ; pages++ {
					page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: start, Count: count})
					require.NoError(t, err)
					paged = append(paged, deadRefs(page.DeadLetters)...)
					if page.Next == "" {
						require.Equal(t, (total+count-1)/count, pages+1, "pages")
						break
					}
					require.Len(t, page.DeadLetters, count, "only a full page has a next one")
					assert.Equal(t, "("+page.DeadLetters[count-1].Ref, page.Next)
					start = page.Next
				}
				assert.Equal(t, refs, paged)
			})
		}
		for _, q := range []inspect.DeadLetterQuery{{Count: math.MaxInt}, {Count: math.MaxInt, Reason: completion.ReasonTaskNotFound}} {
			page, err := in.DeadLetters(ctx, q)
			require.NoError(t, err)
			assert.Equal(t, refs, deadRefs(page.DeadLetters), "a count far above what there is")
			assert.Empty(t, page.Next)
		}
		// Of an empty dead-letter stream, one page without a next.
		_, err := in.PurgeAll(ctx)
		require.NoError(t, err)
		page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{})
		require.NoError(t, err)
		assert.Empty(t, page.DeadLetters)
		assert.Empty(t, page.Next)
	})
}

func TestDeadLetterAndEntryByRef(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newReasonScenario(t, b.Client, true)
		for _, want := range s.dls {
			got, ok, err := s.in.DeadLetter(ctx, want.Ref)
			require.NoError(t, err)
			require.True(t, ok, want.Ref)
			assert.Equal(t, want, got, "DeadLetter(%s) is what DeadLetters lists", want.Ref)

			// The original entry is still in the stream (the consumer
			// acknowledges, it does not delete), under the dead letter's
			// source id; of an oversize one with what was not copied.
			e, ok, err := s.in.Entry(ctx, want.SourceID)
			require.NoError(t, err)
			require.True(t, ok, want.SourceID)
			assert.Equal(t, want.SourceID, e.ID)
			assert.Equal(t, want.SourceID, e.Ref)
			assert.Equal(t, s.stream, e.Stream)
			assert.Zero(t, e.Partition)
			switch want.Reason {
			case completion.ReasonOversize:
				assert.Equal(t, s.big, e.Fields["blob"])
				require.NotNil(t, e.Message, "%v", e.DecodeErr)
				assert.Contains(t, want.Excerpt, e.Message.OperationID)
			case completion.ReasonMalformed:
				assert.Equal(t, want.Fields, e.Fields)
				assert.Nil(t, e.Message)
				assert.ErrorIs(t, e.DecodeErr, completion.ErrMalformed)
			default:
				assert.Equal(t, want.Fields, e.Fields)
				require.NotNil(t, e.Message)
				assert.Equal(t, want.Message, e.Message)
			}
		}
		for _, ref := range []string{"1-1", "0/1-1", "99999999999999-0"} {
			_, ok, err := s.in.DeadLetter(ctx, ref)
			require.NoError(t, err, ref)
			assert.False(t, ok, "no dead letter %s", ref)
			_, ok, err = s.in.Entry(ctx, ref)
			require.NoError(t, err, ref)
			assert.False(t, ok, "no entry %s", ref)
		}
		for _, ref := range []string{"x", "1/1-1", ""} {
			_, _, err := s.in.DeadLetter(ctx, ref)
			assert.Error(t, err, "DeadLetter(%q)", ref)
			_, _, err = s.in.Entry(ctx, ref)
			assert.Error(t, err, "Entry(%q)", ref)
		}
		// A purged dead letter is found no more.
		n, err := s.in.Purge(ctx, s.dls[0].Ref)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		_, ok, err := s.in.DeadLetter(ctx, s.dls[0].Ref)
		require.NoError(t, err)
		assert.False(t, ok)
	})
}

func TestRedriveSkipsOversize(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		for _, path := range []string{"script", "xrange-xadd-xdel"} {
			t.Run(path, func(t *testing.T) {
				ctx := context.Background()
				s := newReasonScenario(t, b.Client, path == "script")
				big := s.ofReason(completion.ReasonOversize)
				tasks := s.ofReason(completion.ReasonTaskNotFound)
				garbage := s.ofReason(completion.ReasonMalformed)
				mark := lastID(t, b.Client, s.stream)

				// Redrive stops at a dead letter that cannot be redriven.
				n, err := s.in.Redrive(ctx, garbage[0].Ref, big[0].Ref, garbage[1].Ref)
				require.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.ErrorContains(t, err, big[0].ID)
				assert.Equal(t, 1, n)
				_, ok, err := s.in.DeadLetter(ctx, garbage[1].Ref)
				require.NoError(t, err)
				assert.True(t, ok, "a dead letter after the refused one was left")

				// By reason: the unknown tasks only.
				_, err = s.in.RedriveReason(ctx, "")
				assert.ErrorContains(t, err, "the reason is empty")
				n, err = s.in.RedriveReason(ctx, "no-such-reason")
				require.NoError(t, err)
				assert.Zero(t, n)
				n, err = s.in.RedriveReason(ctx, completion.ReasonTaskNotFound)
				require.NoError(t, err)
				assert.Equal(t, reasonTasks, n)
				n, err = s.in.RedriveReason(ctx, completion.ReasonTaskNotFound)
				require.NoError(t, err)
				assert.Zero(t, n, "each moved once")
				reasons, err := s.in.DeadLetterReasons(ctx)
				require.NoError(t, err)
				assert.Equal(t, map[string]int64{completion.ReasonMalformed: 1, completion.ReasonOversize: reasonOversize}, reasons)

				// Everything: the oversize ones are skipped, the rest moves,
				// and the error says what was left.
				n, err = s.in.RedriveAll(ctx)
				require.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.ErrorContains(t, err, "left 2 dead letters")
				assert.ErrorContains(t, err, big[0].Ref)
				assert.Equal(t, 1, n, "the second malformed one moved")
				assert.Equal(t, deadRefs(big), deadRefs(allDeadLetters(t, s.in)), "only the oversize ones are left")
				n, err = s.in.RedriveRange(ctx, "-", "+", 1)
				require.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.ErrorContains(t, err, "left 1 dead letter ")
				assert.Zero(t, n)
				n, err = s.in.RedriveReason(ctx, completion.ReasonOversize)
				require.ErrorIs(t, err, inspect.ErrNotRedrivable)
				assert.Zero(t, n)
				assert.Len(t, allDeadLetters(t, s.in), reasonOversize, "nothing of them was moved")

				// The stream got each redrivable dead letter once, with its
				// fields.
				var want, got []string
				for _, dl := range append(garbage, tasks...) {
					want = append(want, fmt.Sprint(dl.Fields))
				}
				for _, v := range streamValues(t, b.Client, s.stream, mark) {
					got = append(got, fmt.Sprint(v))
					assert.NotContains(t, v, "blob", "no oversize entry came back")
				}
				assert.ElementsMatch(t, want, got)
				n, err = s.in.Purge(ctx, deadRefs(big)...)
				require.NoError(t, err)
				assert.Equal(t, reasonOversize, n)
			})
		}
	})
}
