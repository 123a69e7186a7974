package browsertest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/browsertest"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// seeded is a stream with a backlog, two consumers holding entries of
// group chat_consumers, and dead letters of four reasons.
type seeded struct {
	rdb    *redis.Client
	stream string
	in     *inspect.Inspector
	ids    []string // the stream's entries
}

func seed(t *testing.T, rdb *redis.Client) *seeded {
	t.Helper()
	ctx := context.Background()
	s := &seeded{rdb: rdb, stream: uniqueStream(t, rdb)}
	for i := range 400 {
		id, err := completion.Publish(ctx, rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i%40), Success: true})
		require.NoError(t, err)
		s.ids = append(s.ids, id)
	}
	require.NoError(t, rdb.XGroupCreate(ctx, s.stream, "chat_consumers", "0").Err())
	s.read(t, "api-pod-1", 90)
	s.read(t, "api-pod-2", 60)
	for i := range 6 {
		op, task := fmt.Sprintf("op-u%d", i), fmt.Sprintf("t-u%d", i)
		addDeadLetter(t, rdb, s.stream, completion.ReasonTaskNotFound, fmt.Sprintf("completion: task not found: operation %q, task %q", op, task), messageData(op, task), s.ids[i], 1)
	}
	for i := range 3 {
		addDeadLetter(t, rdb, s.stream, completion.ReasonMaxDeliveries, "notify session: websocket gateway returned 503", messageData(fmt.Sprintf("op-%d", 10+i), "t-7"), s.ids[10+i], 5)
	}
	addDeadLetter(t, rdb, s.stream, completion.ReasonPermanent, "result does not match the tool's schema", messageData("op-20", "t-20"), s.ids[20], 1)
	addDeadLetter(t, rdb, s.stream, completion.ReasonMalformed, "completion: malformed message: data is not JSON", "not json", s.ids[21], 1)
	s.in = newInspector(t, rdb, inspect.Config{Stream: s.stream, Group: "chat_consumers"})
	return s
}

// read has consumer read n new entries of the group.
func (s *seeded) read(t *testing.T, consumer string, n int64) []string {
	t.Helper()
	res, err := s.rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: "chat_consumers", Consumer: consumer, Streams: []string{s.stream, ">"}, Count: n, Block: -1}).Result()
	require.NoError(t, err)
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// churn drains part of the backlog over several samples, so that the
// chart shows lag falling, pending entries moving and dead letters added.
func (s *seeded) churn(t *testing.T, site *site) {
	t.Helper()
	for step := range 12 {
		ids := s.read(t, "api-pod-1", 15)
		require.NoError(t, s.rdb.XAck(context.Background(), s.stream, "chat_consumers", ids[:10]...).Err())
		if step%4 == 3 {
			op := fmt.Sprintf("op-late-%d", step)
			addDeadLetter(t, s.rdb, s.stream, completion.ReasonTaskNotFound, "completion: task not found: operation "+op, messageData(op, "t-late"), ids[0], 1)
		}
		site.waitSample(t)
	}
}

// stat returns the overview's data-stat of the stream.
func (s *seeded) stat(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	return text(t, ctx, fmt.Sprintf(`section[data-stream=%q] [data-stat=%q]`, s.stream, name))
}

// info returns what the Inspector reads: entries, the group's pending
// count and lag, dead letters.
func (s *seeded) info(t *testing.T) (length, pending, lag, dead int64) {
	t.Helper()
	si, err := s.in.Info(context.Background())
	require.NoError(t, err)
	g, ok := si.Group("chat_consumers")
	require.True(t, ok)
	return si.Length, g.Pending, g.Lag, si.DeadLetterLength
}

// TestDashboard drives the dashboard with actions in a real browser: the
// overview's numbers are the Inspector's, the dead letters filter by
// reason, a redrive with the button moves one, a POST without the token
// and one from another origin are refused, and the page loads nothing
// from elsewhere.
func TestDashboard(t *testing.T) {
	ctx := browsertest.New(t)
	s := seed(t, redistest.SharedClient(t))
	reg := &completion.MemoryRegistry{}
	reg.Register(completion.Task{TaskID: "t-7", SessionID: "sess-42", ToolCallID: "call-9", ToolName: "render", OperationID: "op-10", Status: "running"})
	site := serve(t, dashboard.Options{Streams: []*inspect.Inspector{s.in}, Actions: true, Registry: reg, SampleInterval: dashboard.MinSampleInterval})
	s.churn(t, site)

	t.Run("overview", func(t *testing.T) { checkOverview(t, ctx, s, site) })
	t.Run("dead letters by reason", func(t *testing.T) { checkReasonFilter(t, ctx, s, site) })
	t.Run("redrive one", func(t *testing.T) { checkRedriveOne(t, ctx, s, site) })
	t.Run("POST without token", func(t *testing.T) { checkNoToken(t, ctx, s, site) })
	t.Run("POST from another origin", func(t *testing.T) { checkForeignOrigin(t, ctx, s, site) })
	t.Run("live tail", func(t *testing.T) { checkTail(t, ctx, s, site) })
}

func checkOverview(t *testing.T, ctx context.Context, s *seeded, site *site) {
	do(t, ctx, "open the overview", chromedp.Navigate(site.url), chromedp.WaitVisible(css("svg polyline")))
	length, pending, lag, dead := s.info(t)
	assert.Equal(t, itoa(length), s.stat(t, ctx, "length"))
	assert.Equal(t, itoa(pending), s.stat(t, ctx, "group-pending"))
	assert.Equal(t, itoa(lag), s.stat(t, ctx, "group-lag"))
	assert.Equal(t, itoa(dead), s.stat(t, ctx, "dead"))
	reasons, err := s.in.DeadLetterReasons(context.Background())
	require.NoError(t, err)
	for reason, n := range reasons {
		assert.Equal(t, itoa(n), text(t, ctx, fmt.Sprintf(`tr[data-reason=%q] [data-stat=reason-count]`, reason)), reason)
	}
	checkSameOrigin(t, ctx)
	screenshot(t, ctx, "dashboard-overview")
}

// checkSameOrigin checks that every link, script, style and form of the
// page, and every resource it loaded, is of the page's own origin.
func checkSameOrigin(t *testing.T, ctx context.Context) {
	t.Helper()
	foreign := eval[[]string](t, ctx, `(() => {
		const out = [];
		for (const el of document.querySelectorAll("[src],[href],[action],[formaction]")) {
			for (const a of ["src", "href", "action", "formaction"]) {
				const v = el.getAttribute(a);
				if (v !== null && new URL(v, location.href).origin !== location.origin) out.push(a + "=" + v);
			}
		}
		for (const r of performance.getEntriesByType("resource")) {
			if (new URL(r.name).origin !== location.origin) out.push("loaded " + r.name);
		}
		return out;
	})()`)
	assert.Empty(t, foreign, "everything on the page is of its own origin")
}

// checkReasonFilter: a reason chosen in the filter shows the dead letters
// of that reason only, both when dashboard.js submits the form on the
// choice and when the Filter button does (as without the script).
//
// Each way submits the form once, and the step waits for the page that
// submission loads. (SetValue followed by a click on Filter submits it
// twice: rows of the reason are then already on the first filtered page,
// a wait for them returns before the second submission replaces the
// document, and a screenshot taken meanwhile never answers.)
func checkReasonFilter(t *testing.T, ctx context.Context, s *seeded, site *site) {
	u := site.url + "dead?stream=" + url.QueryEscape(s.stream)
	want, err := s.in.DeadLetters(context.Background(), inspect.DeadLetterQuery{Reason: completion.ReasonTaskNotFound})
	require.NoError(t, err)
	for _, way := range []struct {
		name   string
		submit chromedp.Action[chromedp.Void]
	}{
		// SetValue fires input and change; dashboard.js submits on change.
		{"choose the reason", chromedp.SetValue(css("#reason"), completion.ReasonTaskNotFound)},
		// Setting the value from a script fires no event; the button submits.
		{"Filter button", chromedp.Steps(
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`void (document.getElementById("reason").value = %q)`, completion.ReasonTaskNotFound)),
			chromedp.Click(css("#filter")),
		)},
	} {
		do(t, ctx, way.name+": open the dead letters", chromedp.Navigate(u), chromedp.WaitVisible(css("#reason")))
		require.Equal(t, int64(http.StatusOK), navigate(t, ctx, way.name+": filter", way.submit), way.name)
		got := eval[filtered](t, ctx, `({reason: new URLSearchParams(location.search).get("reason"),
			rows: Array.from(document.querySelectorAll("tr.row")).map(r => r.dataset.reason)})`)
		assert.Equal(t, completion.ReasonTaskNotFound, got.Reason, "%s: the page's URL", way.name)
		require.Len(t, got.Rows, len(want.DeadLetters), way.name)
		for _, r := range got.Rows {
			assert.Equal(t, completion.ReasonTaskNotFound, r, way.name)
		}
	}
	screenshot(t, ctx, "dashboard-dead-letters")
}

// filtered is what the dead letters page shows after a filter: the reason
// of its URL and the reason of each row.
type filtered struct {
	Reason string   `json:"reason"`
	Rows   []string `json:"rows"`
}

func checkRedriveOne(t *testing.T, ctx context.Context, s *seeded, site *site) {
	length, _, _, dead := s.info(t)
	reasons, err := s.in.DeadLetterReasons(context.Background())
	require.NoError(t, err)
	do(t, ctx, "open the dead letters of a reason", chromedp.Navigate(site.url+"dead?reason=task_not_found&stream="+url.QueryEscape(s.stream)))
	require.Equal(t, int64(http.StatusOK), navigate(t, ctx, "redrive one", chromedp.Click(css("button.redrive-one"))))
	do(t, ctx, "the confirmation", chromedp.WaitVisible(css("#confirm")))
	l2, _, _, d2 := s.info(t)
	require.Equal(t, [2]int64{length, dead}, [2]int64{l2, d2}, "nothing moved before the confirmation")
	require.Equal(t, int64(http.StatusOK), navigate(t, ctx, "confirm", chromedp.Click(css("#confirm"))))
	assert.Contains(t, text(t, ctx, `[data-stat="result"]`), "Moved 1 dead letter back")
	l2, _, _, d2 = s.info(t)
	assert.Equal(t, [2]int64{length + 1, dead - 1}, [2]int64{l2, d2}, "one dead letter moved back")
	do(t, ctx, "the overview after the redrive", chromedp.Navigate(site.url), chromedp.WaitVisible(css("section")))
	assert.Equal(t, itoa(dead-1), s.stat(t, ctx, "dead"), "the overview's count changed")
	assert.Equal(t, itoa(length+1), s.stat(t, ctx, "length"))
	assert.Equal(t, itoa(reasons[completion.ReasonTaskNotFound]-1), text(t, ctx, `tr[data-reason="task_not_found"] [data-stat=reason-count]`))
}

func checkNoToken(t *testing.T, ctx context.Context, s *seeded, site *site) {
	_, _, _, dead := s.info(t)
	status := eval[int](t, ctx, fmt.Sprintf(`fetch("/dash/actions/purge", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: new URLSearchParams({stream: %q, scope: "all", confirm: "yes"})}).then(r => r.status)`, s.stream))
	assert.Equal(t, http.StatusForbidden, status)
	_, _, _, d2 := s.info(t)
	assert.Equal(t, dead, d2, "nothing purged")
}

// checkForeignOrigin: a page of another origin that posts the dashboard's
// own form, with a valid token and the browser's cookie, is refused.
func checkForeignOrigin(t *testing.T, ctx context.Context, s *seeded, site *site) {
	do(t, ctx, "open the dead letters", chromedp.Navigate(site.url+"dead?stream="+url.QueryEscape(s.stream)))
	token := browsertest.Step(t, ctx, "read the token", chromedp.AttributeValue(css(`input[name="csrf_token"]`), "value")).Value
	require.NotEmpty(t, token)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="post" action="%sactions/purge"><input name="stream" value="%s"><input name="scope" value="all">
<input name="confirm" value="yes"><input name="csrf_token" value="%s"></form><script>document.getElementById("f").submit()</script>`, site.url, s.stream, token)
	}))
	t.Cleanup(evil.Close)
	_, _, _, dead := s.info(t)
	do(t, ctx, "the other origin's page posts the form", chromedp.Navigate(evil.URL), chromedp.WaitVisible(css("p.error")))
	assert.Contains(t, text(t, ctx, "p.error"), "cross-origin request refused")
	_, _, _, d2 := s.info(t)
	assert.Equal(t, dead, d2, "nothing purged")
}

func checkTail(t *testing.T, ctx context.Context, s *seeded, site *site) {
	do(t, ctx, "open the live tail",
		chromedp.Navigate(site.url+"tail?stream="+url.QueryEscape(s.stream)),
		chromedp.Poll[chromedp.Void](`document.getElementById("tail-status").textContent === "following"`),
	)
	_, err := s.in.PublishTest(context.Background(), completion.Message{OperationID: "op-tail-check", TaskID: "t-1", Success: true})
	require.NoError(t, err)
	do(t, ctx, "the tail shows the entry", chromedp.Poll[chromedp.Void](`document.getElementById("tail-rows").textContent.includes("op-tail-check")`))
	assert.True(t, strings.Contains(text(t, ctx, "#tail-rows"), "success"))
}
