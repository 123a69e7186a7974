package dashboard_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"regexp"
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

// hostile is text that would be markup, or act on a terminal, if shown
// raw: a script, an attribute breaking out of its quotes into an image
// with an onerror handler, ESC, BEL, a bidi override and a line break.
const hostile = "<script>window.pwned=1</script>\"><img src=x onerror=alert(1)>'><svg onload=alert(2)>\x1b[31m\a\u202e\r\n"

// rawControl matches what must never reach a page raw: C0 controls but
// the page's own line breaks and tabs, DEL, C1, and bidi overrides.
var rawControl = regexp.MustCompile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069]")

// formValue matches a form field's value attribute (html/template writes
// a quote inside one as &#34;).
var formValue = regexp.MustCompile(`value="[^"]*"`)

// checkInert fails the test when page holds an element or attribute that
// came from the data: any script but the dashboard's own, an image, an
// event handler attribute, or a raw control character anywhere but in the
// value of a form field (which posts the text back as it is, and which the
// browser does not show as the page's text).
func checkInert(t *testing.T, what, page string) {
	t.Helper()
	shown := formValue.ReplaceAllString(page, `value=""`)
	assert.False(t, rawControl.MatchString(shown), "%s: a raw control character: %q", what, rawControl.FindString(shown))
	els := parseHTML(t, rawControl.ReplaceAllString(page, "\uFFFD"))
	for _, e := range els {
		switch e.Name {
		case "script":
			assert.Equal(t, "/static/dashboard.js", e.Attrs["src"], "%s: only the dashboard's own script", what)
			assert.Empty(t, strings.TrimSpace(e.Text), "%s: no inline script", what)
		case "img", "iframe", "object", "embed":
			t.Errorf("%s: an <%s> element came from the data", what, e.Name)
		case "svg":
			_, hasViewBox := e.Attrs["viewbox"]
			assert.True(t, hasViewBox, "%s: only the chart's own <svg>", what)
		}
		for name := range e.Attrs {
			assert.False(t, strings.HasPrefix(name, "on"), "%s: <%s %s> came from the data", what, e.Name, name)
		}
	}
}

// hostileStream fills a stream with hostile text in every field, field
// names and ids of the message included, in group and consumer names, and
// in every field of a dead letter.
func hostileStream(t *testing.T, rdb *redis.Client) (stream, entryID, deadID string) {
	t.Helper()
	ctx := context.Background()
	stream = uniqueStream(t, rdb)
	data := `{"operation_id":"op` + jsonText(hostile) + `","task_id":"t` + jsonText(hostile) + `","success":false,"result":{"` +
		jsonText(hostile) + `":"` + jsonText(hostile) + `"},"error":"` + jsonText(hostile) + `"}`
	entryID, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", data, hostile, hostile, "x" + hostile, strings.Repeat("big ", 50_000)}}).Result()
	require.NoError(t, err)
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g"+hostile, "0").Err())
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	for _, g := range []string{"g" + hostile, "g"} {
		require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c" + hostile, Streams: []string{stream, ">"}, Count: 10, Block: -1}).Err())
	}
	values := []any{"data", data, hostile, hostile}
	for _, f := range []string{completion.DeadLetterReasonField, completion.DeadLetterErrorField, completion.DeadLetterConsumerField,
		completion.DeadLetterGroupField, completion.DeadLetterStreamField, completion.DeadLetterIDField, completion.DeadLetterTimeField,
		completion.DeadLetterDeliveriesField} {
		values = append(values, f, hostile)
	}
	values = append(values, completion.DeadLetterErrorField, hostile+strings.Repeat("long error ", 10_000))
	deadID, err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(stream), Values: values}).Result()
	require.NoError(t, err)
	return stream, entryID, deadID
}

// jsonText escapes s for a JSON string, as a producer would.
func jsonText(s string) string {
	r := strings.NewReplacer(`"`, `\"`, `\`, `\\`, "\n", `\n`, "\r", `\r`, "\x1b", `\u001b`, "\a", `\u0007`)
	return r.Replace(s)
}

// TestHostileData: every page shows hostile text as text: no element,
// attribute or control character comes from the data. Lists cut long
// values; the detail pages show them whole.
func TestHostileData(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream, entryID, deadID := hostileStream(t, be.Client)
		in := newInspector(t, be.Client, inspect.Config{Stream: stream, Group: "g"})
		reg := completion.TaskRegistryFunc(func(ctx context.Context, op, task string) (completion.Task, error) {
			return completion.Task{TaskID: task, SessionID: hostile, UserID: hostile, ToolCallID: hostile, ToolName: hostile, OperationID: op, Status: hostile}, nil
		})
		for _, actions := range []bool{false, true} {
			h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, Registry: reg, Actions: actions})
			q := "stream=" + url.QueryEscape(stream)
			pages := map[string]string{
				"overview":           "/",
				"pending":            "/pending?" + q,
				"pending of a group": "/pending?" + q + "&group=" + url.QueryEscape("g"+hostile) + "&consumer=" + url.QueryEscape("c"+hostile),
				"dead letters":       "/dead?" + q,
				"dead of a reason":   "/dead?" + q + "&reason=" + url.QueryEscape(hostile),
				"dead letter":        "/deadletter?" + q + "&ref=" + deadID,
				"entry":              "/entry?" + q + "&ref=" + entryID,
				"tail":               "/tail?" + q,
				"bad ref":            "/entry?" + q + "&ref=" + url.QueryEscape(hostile),
				"unknown stream":     "/dead?stream=" + url.QueryEscape(hostile),
				"bad start":          "/dead?" + q + "&start=" + url.QueryEscape(hostile),
			}
			if actions {
				pages["publish"] = "/publish?" + q
			}
			for what, path := range pages {
				_, page := get(t, h, path)
				checkInert(t, what, page)
				switch what {
				case "dead letters", "dead of a reason", "pending", "overview":
					assert.Less(t, len(page), 64<<10, "%s: long values are cut", what)
				case "dead letter":
					assert.Contains(t, page, strings.Repeat("long error ", 10_000), "the detail shows the error whole")
				case "entry":
					assert.Contains(t, page, strings.Repeat("big ", 50_000), "the detail shows the field whole")
					assert.Contains(t, page, "&lt;script&gt;", "the text is shown, escaped")
				}
			}
		}
	})
}

// TestHostileTail: the live tail sends hostile text escaped, as JSON.
func TestHostileTail(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream, _, _ := hostileStream(t, be.Client)
		in := newInspector(t, be.Client, inspect.Config{Stream: stream})
		h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})
		b := newBrowser(t, h, "/")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/tail/events?from=0&stream="+url.QueryEscape(stream), nil)
		require.NoError(t, err)
		res, err := b.c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		var data string
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data = d
				break
			}
		}
		require.NotEmpty(t, data)
		assert.Less(t, len(data), 4096, "the fields are cut")
		assert.False(t, rawControl.MatchString(data), "no raw control character: %q", data)
		assert.NotContains(t, data, "<script>", "JSON escapes markup")
		assert.Contains(t, data, `\\u001b`, "ESC is shown as an escape")
	})
}
