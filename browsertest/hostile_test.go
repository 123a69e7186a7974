package browsertest_test

import (
	"context"
	"fmt"
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

// hostile would run a script, or load an image that runs one, if a page
// showed it as markup; it also carries ESC and a bidi override.
const hostile = `<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2">'><svg onload="window.pwned=3"></svg>` + "\x1b[31m\u202e"

// inert is true when the page runs nothing and holds nothing of the
// data's markup: no flag set, no image, frame or foreign script, no event
// handler attribute, only the chart's own svg.
const inert = `(() => {
	if (window.pwned !== undefined) return "pwned: " + window.pwned;
	if (document.querySelector("img, iframe, object, embed")) return "an element from the data";
	for (const s of document.scripts) if (!s.src.endsWith("/static/dashboard.js")) return "a script from the data";
	for (const s of document.querySelectorAll("svg")) if (!s.getAttribute("viewBox")) return "an svg from the data";
	for (const el of document.querySelectorAll("*")) for (const a of el.attributes) if (a.name.startsWith("on")) return "a handler: " + a.name;
	return "";
})()`

// TestHostileInBrowser: hostile text in every field, name and id shows as
// text on every page in a real browser, and in the live tail.
func TestHostileInBrowser(t *testing.T) {
	ctx := browsertest.New(t)
	rdb := redistest.SharedClient(t)
	stream := uniqueStream(t, rdb)
	entry, dead := hostileEntries(t, rdb, stream)
	in := newInspector(t, rdb, inspect.Config{Stream: stream, Group: "g"})
	reg := completion.TaskRegistryFunc(func(ctx context.Context, op, task string) (completion.Task, error) {
		return completion.Task{TaskID: task, SessionID: hostile, ToolCallID: hostile, ToolName: hostile, Status: hostile}, nil
	})
	site := serve(t, dashboard.Options{Streams: []*inspect.Inspector{in}, Registry: reg, Actions: true, SampleInterval: dashboard.MinSampleInterval})
	q := "stream=" + url.QueryEscape(stream)
	for _, path := range []string{"", "pending?" + q, "pending?" + q + "&group=" + url.QueryEscape("g"+hostile), "dead?" + q,
		"dead?" + q + "&reason=" + url.QueryEscape(hostile), "deadletter?" + q + "&ref=" + dead, "entry?" + q + "&ref=" + entry} {
		do(t, ctx, "open /"+path, chromedp.Navigate(site.url+path), chromedp.WaitVisible(css("main")))
		assert.Empty(t, eval[string](t, ctx, inert), "/%s", path)
		assert.Contains(t, text(t, ctx, "main"), "<script>window.pwned=1</script>", "/%s: shown as text", path)
	}
	do(t, ctx, "open the live tail", chromedp.Navigate(site.url+"tail?"+q),
		chromedp.Poll[chromedp.Void](`document.getElementById("tail-status").textContent === "following"`))
	_, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{"data", hostile, hostile, hostile}}).Result()
	require.NoError(t, err)
	do(t, ctx, "the tail shows the entry", chromedp.Poll[chromedp.Void](`document.querySelectorAll("#tail-rows tr").length > 0`))
	assert.Empty(t, eval[string](t, ctx, inert), "tail")
	assert.Contains(t, text(t, ctx, "#tail-rows"), "<img src=x", "the tail shows the text")
}

// hostileEntries adds an entry and a dead letter with hostile text in
// every field and name, in a group and a consumer name, and returns their
// ids.
func hostileEntries(t *testing.T, rdb *redis.Client, stream string) (entry, dead string) {
	t.Helper()
	ctx := context.Background()
	h := strings.NewReplacer(`"`, `\"`, "\x1b", `\u001b`).Replace(hostile)
	data := fmt.Sprintf(`{"operation_id":"%s","task_id":"%s","success":false,"result":{"%s":"%s"},"error":"%s"}`, h, h, h, h, h)
	entry, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", data, hostile, hostile}}).Result()
	require.NoError(t, err)
	for _, g := range []string{"g", "g" + hostile} {
		require.NoError(t, rdb.XGroupCreate(ctx, stream, g, "0").Err())
		require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c" + hostile, Streams: []string{stream, ">"}, Block: -1}).Err())
	}
	values := []any{"data", data, hostile, hostile}
	for _, f := range []string{completion.DeadLetterReasonField, completion.DeadLetterErrorField, completion.DeadLetterConsumerField,
		completion.DeadLetterGroupField, completion.DeadLetterStreamField, completion.DeadLetterIDField} {
		values = append(values, f, hostile)
	}
	dead, err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(stream), Values: values}).Result()
	require.NoError(t, err)
	return entry, dead
}

// TestReadOnlyInBrowser: without actions no page shows a form, a button
// or a token, and a POST is refused.
func TestReadOnlyInBrowser(t *testing.T) {
	ctx := browsertest.New(t)
	s := seed(t, redistest.SharedClient(t))
	site := serve(t, dashboard.Options{Streams: []*inspect.Inspector{s.in}})
	page, err := s.in.DeadLetters(context.Background(), inspect.DeadLetterQuery{Count: 1})
	require.NoError(t, err)
	q := "stream=" + url.QueryEscape(s.stream)
	for _, path := range []string{"", "dead?" + q, "deadletter?" + q + "&ref=" + page.DeadLetters[0].Ref, "pending?" + q} {
		do(t, ctx, "open /"+path, chromedp.Navigate(site.url+path), chromedp.WaitVisible(css("main")))
		n := eval[int](t, ctx, `document.querySelectorAll("form[method=post], button[type=submit][formaction], button.redrive-one, button.purge-one, input[name=csrf_token]").length`)
		assert.Zero(t, n, "/%s: no action", path)
		body := text(t, ctx, "body")
		assert.NotContains(t, body, "Redrive", "/%s", path)
		assert.NotContains(t, body, "Purge", "/%s", path)
		assert.Contains(t, body, "read-only", "/%s", path)
	}
	_, _, _, dead := s.info(t)
	status := eval[int](t, ctx, fmt.Sprintf(`fetch("/dash/actions/redrive", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: new URLSearchParams({stream: %q, scope: "all", confirm: "yes"})}).then(r => r.status)`, s.stream))
	assert.Equal(t, 403, status)
	_, _, _, d2 := s.info(t)
	assert.Equal(t, dead, d2)
}
