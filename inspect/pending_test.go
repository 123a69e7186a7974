package inspect_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

func pendingIDs(ps []inspect.PendingEntry) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func TestPendingQuery(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		var ids []string
		for i := range 10 {
			ids = append(ids, publish(t, b.Client, stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: "t", Success: true}))
		}
		require.NoError(t, b.Client.XGroupCreate(ctx, stream, "g", "0").Err())
		require.NoError(t, b.Client.XGroupCreate(ctx, stream, "other", "$").Err())
		// a holds 0-3 and 7-8, b holds 4-6; 9 is not delivered.
		for _, r := range []struct {
			consumer string
			count    int64
		}{{"a", 4}, {"b", 3}, {"a", 2}} {
			require.NoError(t, b.Client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: r.consumer, Streams: []string{stream, ">"}, Count: r.count, Block: -1}).Err())
		}
		byA := append(append([]string{}, ids[0:4]...), ids[7:9]...)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Group: "g"})

		tests := []struct {
			name string
			q    inspect.PendingQuery
			want []string
		}{
			{"all", inspect.PendingQuery{}, ids[:9]},
			{"the group named", inspect.PendingQuery{Group: "g"}, ids[:9]},
			{"a group without pending entries", inspect.PendingQuery{Group: "other"}, []string{}},
			{"a count", inspect.PendingQuery{Count: 3}, ids[:3]},
			{"a count far above what there is", inspect.PendingQuery{Count: math.MaxInt}, ids[:9]},
			{"one consumer's", inspect.PendingQuery{Consumer: "a"}, byA},
			{"the other's", inspect.PendingQuery{Consumer: "b"}, ids[4:7]},
			{"a consumer with none", inspect.PendingQuery{Consumer: "nobody"}, []string{}},
			{"from the oldest", inspect.PendingQuery{Start: "-"}, ids[:9]},
			{"from an id", inspect.PendingQuery{Start: ids[4]}, ids[4:9]},
			{"after an id", inspect.PendingQuery{Start: "(" + ids[4]}, ids[5:9]},
			{"after an id, one consumer's", inspect.PendingQuery{Start: "(" + ids[3], Consumer: "a", Count: 1}, ids[7:8]},
			{"after the last", inspect.PendingQuery{Start: "(" + ids[8]}, []string{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := in.Pending(ctx, tt.q)
				require.NoError(t, err)
				assert.Equal(t, tt.want, pendingIDs(got))
				for _, p := range got {
					assert.Equal(t, p.ID, p.Ref)
					if tt.q.Consumer != "" {
						assert.Equal(t, tt.q.Consumer, p.Consumer)
					}
				}
			})
		}

		// Paging by the last Ref, as PendingQuery.Start says.
		for _, q := range []inspect.PendingQuery{{Count: 2}, {Count: 4, Consumer: "a"}} {
			var paged []string
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10)
				page, err := in.Pending(ctx, q)
				require.NoError(t, err)
				paged = append(paged, pendingIDs(page)...)
				if len(page) < q.Count {
					break
				}
				q.Start = "(" + page[len(page)-1].Ref
			}
			if q.Consumer == "" {
				assert.Equal(t, ids[:9], paged)
			} else {
				assert.Equal(t, byA, paged)
			}
		}

		_, err := in.Pending(ctx, inspect.PendingQuery{Start: "x"})
		assert.ErrorContains(t, err, "start")
		_, err = in.Pending(ctx, inspect.PendingQuery{Count: -1})
		assert.ErrorContains(t, err, "count is -1")
	})
}

// TestPendingMissingGroup: the error for a group the stream does not have
// names the groups it has.
func TestPendingMissingGroup(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		in := newInspector(t, b.Client, inspect.Config{Stream: stream, Group: "nope"})

		// No stream at all.
		_, err := in.Pending(ctx, inspect.PendingQuery{})
		require.Error(t, err)
		assert.ErrorContains(t, err, "NOGROUP")
		assert.ErrorContains(t, err, fmt.Sprintf("stream %q has no group %q", stream, "nope"))
		assert.ErrorContains(t, err, "the stream has no consumer groups")

		publish(t, b.Client, stream, completion.Message{OperationID: "op-1", TaskID: "t", Success: true})
		require.NoError(t, b.Client.XGroupCreate(ctx, stream, "workers", "0").Err())
		_, err = in.Pending(ctx, inspect.PendingQuery{})
		assert.ErrorContains(t, err, "NOGROUP")
		assert.ErrorContains(t, err, `its one group is "workers"`)

		require.NoError(t, b.Client.XGroupCreate(ctx, stream, "audit", "0").Err())
		_, err = in.Pending(ctx, inspect.PendingQuery{Group: "other"})
		assert.ErrorContains(t, err, "NOGROUP")
		assert.ErrorContains(t, err, fmt.Sprintf("stream %q has no group %q", stream, "other"))
		assert.ErrorContains(t, err, `its groups are ["audit" "workers"]`)

		got, err := in.Pending(ctx, inspect.PendingQuery{Group: "workers"})
		require.NoError(t, err)
		assert.Empty(t, got)
	})
}
