package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

const (
	manyPending = 100_000
	manyDead    = 10_000
)

// seedLarge adds manyPending entries to stream, all read by consumer c1
// of group g and left pending, and manyDead dead letters, every tenth of
// reason malformed and the others task_not_found, all pipelined.
func seedLarge(t *testing.T, rdb *redis.Client, stream string) {
	t.Helper()
	ctx := context.Background()
	const batch = 5000
	add := func(key string, n int, values func(i int) []any) {
		for start := 0; start < n; start += batch {
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := start; i < min(start+batch, n); i++ {
					p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: values(i)})
				}
				return nil
			})
			require.NoError(t, err)
		}
	}
	add(stream, manyPending, func(i int) []any { return []any{"data", message(i)} })
	require.NoError(t, rdb.XGroupCreate(ctx, stream, "g", "0").Err())
	for read := 0; read < manyPending; read += 10_000 {
		require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{stream, ">"}, Count: 10_000, Block: -1}).Err())
	}
	add(completion.DeadLetterStreamFor(stream), manyDead, func(i int) []any {
		reason := completion.ReasonTaskNotFound
		if i%10 == 0 {
			reason = completion.ReasonMalformed
		}
		return []any{"data", message(i), completion.DeadLetterReasonField, reason, completion.DeadLetterErrorField, fmt.Sprintf("error %d", i),
			completion.DeadLetterDeliveriesField, "1", completion.DeadLetterIDField, "1-1"}
	})
}

// TestLargeStream: with 100,000 pending entries and 10,000 dead letters
// the pages stay small (a page of entries at a time, read with the
// Inspector's Start and Next) and paging goes through them in order.
func TestLargeStream(t *testing.T) {
	rdb := redistest.SharedClient(t)
	stream := uniqueStream(t, rdb)
	seedLarge(t, rdb, stream)
	in := newInspector(t, rdb, inspect.Config{Stream: stream, Group: "g"})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, Actions: true})
	q := "stream=" + url.QueryEscape(stream)

	code, page := get(t, h, "/")
	require.Equal(t, http.StatusOK, code, page)
	assert.Equal(t, "100000", stat(t, page, stream, "group-pending"))
	assert.Equal(t, "10000", stat(t, page, stream, "dead"))
	assert.Contains(t, page, "9000", "task_not_found counted")
	assert.Less(t, len(page), 64<<10)

	t.Run("pending", func(t *testing.T) {
		checkPaging(t, h, "/pending?"+q, dashboard.DefaultPageSize, "")
	})
	t.Run("dead letters", func(t *testing.T) {
		checkPaging(t, h, "/dead?"+q, dashboard.DefaultPageSize, "")
	})
	t.Run("dead letters of a reason", func(t *testing.T) {
		checkPaging(t, h, "/dead?"+q+"&reason="+completion.ReasonMalformed, dashboard.DefaultPageSize, completion.ReasonMalformed)
	})
}

// checkPaging loads the first pages of path and checks that each holds
// size rows, is small, and follows the one before it without overlap; with
// reason, that every row is of that reason.
func checkPaging(t *testing.T, h http.Handler, path string, size int, reason string) {
	t.Helper()
	seen := map[string]bool{}
	for range 4 {
		code, page := get(t, h, path)
		require.Equal(t, http.StatusOK, code, page)
		assert.Less(t, len(page), 96<<10, "a page's size does not grow with the stream")
		els := parseHTML(t, page)
		rows := find(els, "tr", "class", "row")
		require.Len(t, rows, size)
		for _, a := range find(els, "a", "href", "") {
			href := a.Attrs["href"]
			if !strings.Contains(href, "/entry?") && !strings.Contains(href, "/deadletter?") {
				continue
			}
			u, err := url.Parse(href)
			require.NoError(t, err)
			ref := u.Query().Get("ref")
			require.False(t, seen[ref], "%s shown on two pages", ref)
			seen[ref] = true
		}
		if reason != "" {
			for _, r := range rows {
				require.Equal(t, reason, r.Attrs["data-reason"])
			}
		}
		next := find(els, "a", "rel", "next")
		require.Len(t, next, 1, "a next page")
		path = next[0].Attrs["href"]
	}
	assert.Len(t, seen, 4*size)
}
