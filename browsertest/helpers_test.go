package browsertest_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/browsertest"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

var update = flag.Bool("update", false, "write the screenshots to ../docs/images, which the README shows")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(redistest.Main(m))
}

// site is a dashboard served on a test server, under /dash/.
type site struct {
	url string // the dashboard's URL, ending in "/dash/"
	h   *dashboard.Handler
}

// serve serves a dashboard of opts (sampling while the test runs).
func serve(t *testing.T, opts dashboard.Options) *site {
	t.Helper()
	opts.Prefix = "/dash/"
	opts.Logger = slog.New(slog.DiscardHandler)
	h, err := dashboard.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	mux := http.NewServeMux()
	mux.Handle("/dash/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		require.NoError(t, <-done)
	})
	return &site{url: srv.URL + "/dash/", h: h}
}

// samplesRe finds the chart's sample count on the overview.
var samplesRe = regexp.MustCompile(`([0-9]+) samples?\.`)

// samples returns how many samples the overview's first chart has.
func (s *site) samples(t *testing.T) int {
	t.Helper()
	res, err := http.Get(s.url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	m := samplesRe.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// waitSample waits until the chart has more samples than now.
func (s *site) waitSample(t *testing.T) {
	t.Helper()
	n := s.samples(t)
	require.Eventually(t, func() bool { return s.samples(t) > n }, 15*time.Second, 20*time.Millisecond, "no new sample")
}

// uniqueStream returns a stream name of this test, deleted with its keys
// when it ends.
func uniqueStream(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "browser-test:%s:%08x")
}

// addDeadLetter adds a dead letter of reason to stream's dead-letter
// stream, as a consumer writes one, for the completion of operation op.
func addDeadLetter(t *testing.T, rdb *redis.Client, stream, reason, errText, data, sourceID string, deliveries int) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(stream), Values: []any{
		completion.DataField, data,
		completion.DeadLetterReasonField, reason, completion.DeadLetterErrorField, errText,
		completion.DeadLetterDeliveriesField, strconv.Itoa(deliveries), completion.DeadLetterConsumerField, "api-pod-1",
		completion.DeadLetterGroupField, "chat_consumers", completion.DeadLetterStreamField, stream,
		completion.DeadLetterIDField, sourceID, completion.DeadLetterTimeField, time.Now().UTC().Format(time.RFC3339Nano),
	}}).Result()
	require.NoError(t, err)
	return id
}

// messageData returns the data field of a completion.
func messageData(op, task string) string {
	b, err := completion.Message{OperationID: op, TaskID: task, Success: true, Result: []byte(`{"pages":3}`)}.MarshalJSON()
	if err != nil {
		panic(err)
	}
	return string(b)
}

func newInspector(t *testing.T, rdb *redis.Client, cfg inspect.Config) *inspect.Inspector {
	t.Helper()
	in, err := inspect.New(rdb, cfg)
	require.NoError(t, err)
	return in
}

// screenshot saves the page as name.png: under ../docs/images with
// -update, in a temporary directory otherwise.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := browsertest.Step(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := t.TempDir()
	if *update {
		dir = filepath.Join("..", "docs", "images")
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
	t.Logf("screenshot %s (%d bytes)", filepath.Join(dir, name+".png"), len(png))
}

// text returns the text of the first element the CSS selector sel selects
// (waiting for one, within browsertest.StepTimeout).
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return browsertest.Step(t, ctx, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// eval evaluates a JavaScript expression (awaiting a promise).
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	name, _, _ := strings.Cut(js, "\n")
	return browsertest.Step(t, ctx, "evaluate "+name, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// do runs the steps in the browser as one step, named step in a failure's
// message, within browsertest.StepTimeout.
func do(t *testing.T, ctx context.Context, step string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	browsertest.Step(t, ctx, step, chromedp.Steps(steps...))
}

// navigate runs the steps, which start one navigation (such as a click on
// a form's button), waits until the page they lead to has loaded, and
// returns its HTTP status.
func navigate(t *testing.T, ctx context.Context, step string, steps ...chromedp.Action[chromedp.Void]) int64 {
	t.Helper()
	return browsertest.Step(t, ctx, step, browsertest.Navigation(steps...)).Status
}

// css is a CSS selector for the first element it matches.
func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

func itoa[T int | int64](n T) string { return fmt.Sprint(n) }
