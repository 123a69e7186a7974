package dashboard_test

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// quiet is a logger that drops everything.
var quiet = slog.New(slog.DiscardHandler)

// uniqueStream returns a stream name of this test without a hash tag (so
// that it can also be partitioned), deleted with its keys when it ends.
func uniqueStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "dashboard-test:%s:%08x")
}

func newInspector(t testing.TB, rdb *redis.Client, cfg inspect.Config) *inspect.Inspector {
	t.Helper()
	in, err := inspect.New(rdb, cfg)
	require.NoError(t, err)
	return in
}

func newHandler(t testing.TB, opts dashboard.Options) *dashboard.Handler {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	h, err := dashboard.New(opts)
	require.NoError(t, err)
	return h
}

// get serves a GET of target and returns the status and body.
func get(t testing.TB, h http.Handler, target string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w.Code, w.Body.String()
}

// browser is an HTTP client with cookies, against a test server.
type browser struct {
	t    testing.TB
	base string // the server's URL, with the handler's prefix
	c    *http.Client
}

func newBrowser(t testing.TB, h http.Handler, prefix string) *browser {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	return &browser{t: t, base: srv.URL + strings.TrimSuffix(prefix, "/"), c: c}
}

// get fetches path (below the prefix, starting with "/").
func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	res, err := b.c.Get(b.base + path)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	return res.StatusCode, string(body)
}

// post posts form to path with the headers given as name, value pairs.
func (b *browser) post(path string, form url.Values, headers ...string) (int, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	return res.StatusCode, string(body)
}

// element is an element of a parsed page.
type element struct {
	Name  string
	Attrs map[string]string
	Text  string // the text directly inside it
}

// parseHTML parses a page as the HTML it is (void elements, attributes
// without values) and returns its elements in document order. It fails
// the test when the page does not parse.
func parseHTML(t testing.TB, page string) []element {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var out []element
	var open []int
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, "the page does not parse")
		switch tok := tok.(type) {
		case xml.StartElement:
			e := element{Name: strings.ToLower(tok.Name.Local), Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				name := strings.ToLower(a.Name.Local)
				if a.Name.Space != "" {
					name = strings.ToLower(a.Name.Space) + ":" + name
				}
				e.Attrs[name] = a.Value
			}
			out = append(out, e)
			open = append(open, len(out)-1)
		case xml.EndElement:
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		case xml.CharData:
			if len(open) > 0 {
				out[open[len(open)-1]].Text += string(tok)
			}
		}
	}
}

// find returns the elements named name with attribute attr (any value
// when value is "").
func find(els []element, name, attr, value string) []element {
	var out []element
	for _, e := range els {
		if name != "" && e.Name != name {
			continue
		}
		if attr != "" {
			v, ok := e.Attrs[attr]
			if !ok || value != "" && v != value {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// stat returns the text of the element with data-stat=name inside the
// section of stream (the first one).
func stat(t testing.TB, page, stream, name string) string {
	t.Helper()
	els := parseHTML(t, page)
	in := false
	for _, e := range els {
		if e.Name == "section" {
			in = e.Attrs["data-stream"] == stream
		}
		if in && e.Attrs["data-stat"] == name {
			return strings.TrimSpace(e.Text)
		}
	}
	t.Fatalf("no data-stat %q for stream %q on the page", name, stream)
	return ""
}

// deadLetter adds a dead letter of reason with the original fields given
// as name, value pairs to stream's dead-letter stream and returns its id.
func deadLetter(t testing.TB, rdb *redis.Client, stream, reason, errText string, fields ...string) string {
	t.Helper()
	values := append([]any{}, toAny(fields)...)
	values = append(values,
		completion.DeadLetterReasonField, reason, completion.DeadLetterErrorField, errText,
		completion.DeadLetterDeliveriesField, "1", completion.DeadLetterConsumerField, "c1",
		completion.DeadLetterGroupField, "g", completion.DeadLetterStreamField, stream,
		completion.DeadLetterIDField, "1-1", completion.DeadLetterTimeField, "2026-01-02T03:04:05.000Z")
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(stream), Values: values}).Result()
	require.NoError(t, err)
	return id
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// message returns the data field of a completion of operation op-N, task t-N.
func message(n int) string {
	return fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t-%d","success":true,"result":{"n":%d},"error":null}`, n, n, n)
}

// backlog publishes n completions to stream, creates group g and has
// consumer c1 read the first read of them (pending, unacknowledged).
func backlog(t testing.TB, rdb *redis.Client, stream string, n, read int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		_, err := completion.Publish(ctx, rdb, stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		require.NoError(t, err)
	}
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	if read > 0 {
		require.NoError(t, rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{stream, ">"}, Count: int64(read), Block: -1}).Err())
	}
}

// eventually waits for cond.
func eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 15*time.Second, 10*time.Millisecond, msg)
}
