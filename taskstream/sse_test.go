package taskstream

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/internal/ssetest"
)

type frame = ssetest.Frame

// readFrames parses SSE blocks from r until it ends.
func readFrames(r io.Reader) ([]frame, error) { return ssetest.ReadAll(r) }

// sseServer serves the SSE handler under /tasks/{task_id}/events, with the
// user id from the "user" query parameter.
func sseServer(t *testing.T, f *fixture, cfg SSEConfig) *httptest.Server {
	t.Helper()
	if cfg.UserID == nil {
		cfg.UserID = func(r *http.Request) string { return r.URL.Query().Get("user") }
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	h, err := NewSSEHandler(f.hub, f.registry, cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /tasks/{task_id}/events", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// events returns the data of the frames that carry an id, and their ids.
func events(frames []frame) (data, ids []string) {
	for _, f := range frames {
		if f.ID != "" {
			data = append(data, f.Data)
			ids = append(ids, f.ID)
		}
	}
	return data, ids
}

func TestSSEStatusCodes(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		f := newFixture(t, b, HubConfig{})
		srv := sseServer(t, f, SSEConfig{})
		f.task(t, "mine", "u-1")
		f.task(t, "anyone", "")
		_, err := f.streams.Finish(context.Background(), "mine")
		require.NoError(t, err)
		_, err = f.streams.Finish(context.Background(), "anyone")
		require.NoError(t, err)
		tests := []struct {
			name, path string
			header     map[string]string
			want       int
		}{
			{"owner", "/tasks/mine/events?user=u-1", nil, http.StatusOK},
			{"no user asked", "/tasks/mine/events", nil, http.StatusOK},
			{"task without owner", "/tasks/anyone/events?user=u-2", nil, http.StatusOK},
			{"another user", "/tasks/mine/events?user=u-2", nil, http.StatusForbidden},
			{"unknown task", "/tasks/nobody/events?user=u-1", nil, http.StatusNotFound},
			{"task id not UTF-8", "/tasks/%FF/events", nil, http.StatusBadRequest},
			{"task id too long", "/tasks/" + strings.Repeat("x", MaxTaskIDBytes+1) + "/events", nil, http.StatusBadRequest},
			{"malformed Last-Event-ID", "/tasks/mine/events", map[string]string{"Last-Event-ID": "abc"}, http.StatusBadRequest},
			{"malformed last_event_id", "/tasks/mine/events?last_event_id=1-2-3", nil, http.StatusBadRequest},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp := get(t, srv.URL+tt.path, tt.header)
				assert.Equal(t, tt.want, resp.StatusCode)
				if tt.want == http.StatusOK {
					assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
				}
			})
		}
		assert.Zero(t, b.Client.Exists(context.Background(), f.streams.Key("nobody")).Val(), "a 404 creates no stream")
	})
}

func TestSSEStreamsReplayThenLiveThenCloses(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		srv := sseServer(t, f, SSEConfig{Retry: 1500 * time.Millisecond})
		f.task(t, "t-1", "u-1")
		_, err := f.streams.Append(ctx, "t-1", ev(0))
		require.NoError(t, err)
		multiline := json.RawMessage("{\n  \"type\": \"text-delta\",\r\n  \"delta\": \"x\"\r}")
		_, err = f.streams.Append(ctx, "t-1", multiline)
		require.NoError(t, err)

		resp := get(t, srv.URL+"/tasks/t-1/events?user=u-1", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
		var frames []frame
		var readErr error
		read := make(chan struct{})
		go func() { frames, readErr = readFrames(resp.Body); close(read) }()
		require.Eventually(t, func() bool { return f.hub.Stats().Subscriptions == 1 }, 10*time.Second, time.Millisecond)
		_, err = f.streams.Append(ctx, "t-1", ev(2))
		require.NoError(t, err)
		fid, err := f.streams.Finish(ctx, "t-1")
		require.NoError(t, err)
		select {
		case <-read:
		case <-time.After(20 * time.Second):
			t.Fatal("the response did not end after the finish event")
		}
		require.NoError(t, readErr)
		assert.Equal(t, "1500", frames[0].Retry)
		data, ids := events(frames)
		assert.Equal(t, []string{string(ev(0)), "{\n  \"type\": \"text-delta\",\n  \"delta\": \"x\"\n}", string(ev(2)), FinishEvent}, data)
		assert.Equal(t, fid, ids[3])
		all, err := f.streams.Read(ctx, "t-1", "", 0)
		require.NoError(t, err)
		for i, e := range all {
			assert.Equal(t, e.ID, ids[i], "id: is the stream entry id")
		}

		// Resuming after the second event, by header or by parameter.
		for _, h := range []map[string]string{{"Last-Event-ID": ids[1]}, nil} {
			url := srv.URL + "/tasks/t-1/events?user=u-1"
			if h == nil {
				url += "&last_event_id=" + ids[1]
			}
			frames, err := readFrames(get(t, url, h).Body)
			require.NoError(t, err)
			data, _ := events(frames)
			assert.Equal(t, []string{string(ev(2)), FinishEvent}, data)
		}
		// After the finish event: 204, which stops EventSource.
		resp = get(t, srv.URL+"/tasks/t-1/events?user=u-1", map[string]string{"Last-Event-ID": fid})
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	})
}

// A task that is no longer running gets its stream and a finish event, as
// the Python service answers; no subscription is needed.
func TestSSETaskNoLongerRunning(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		f := newFixture(t, b, HubConfig{})
		srv := sseServer(t, f, SSEConfig{})
		f.task(t, "t-1", "")
		_, err := f.streams.Append(ctx, "t-1", ev(0)) // a Python writer that failed before its finish
		require.NoError(t, err)
		_, err = f.registry.Fail(ctx, "t-1")
		require.NoError(t, err)
		frames, err := readFrames(get(t, srv.URL+"/tasks/t-1/events", nil).Body)
		require.NoError(t, err)
		var data []string
		for _, fr := range frames {
			if fr.Data != "" {
				data = append(data, fr.Data)
			}
		}
		assert.Equal(t, []string{string(ev(0)), FinishEvent}, data)
		assert.Empty(t, frames[len(frames)-1].ID, "the made-up finish has no id")
	})
}

func TestSSEHeartbeat(t *testing.T) {
	rdb, mr := newMini(t)
	f := newFixture(t, redistest.Backend{Name: "miniredis", Client: rdb, Mini: mr}, HubConfig{})
	srv := sseServer(t, f, SSEConfig{Heartbeat: 20 * time.Millisecond})
	f.task(t, "t-1", "")
	resp := get(t, srv.URL+"/tasks/t-1/events", nil)
	sc := bufio.NewScanner(resp.Body)
	beats := 0
	for beats < 3 && sc.Scan() {
		if sc.Text() == ": heartbeat" {
			beats++
		}
	}
	assert.Equal(t, 3, beats)
}

// A client that goes away ends the handler and its subscription.
func TestSSEClientGoesAway(t *testing.T) {
	rdb, mr := newMini(t)
	f := newFixture(t, redistest.Backend{Name: "miniredis", Client: rdb, Mini: mr}, HubConfig{})
	srv := sseServer(t, f, SSEConfig{})
	f.task(t, "t-1", "")
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/tasks/t-1/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return f.hub.Stats().Subscriptions == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	_ = resp.Body.Close()
	require.Eventually(t, func() bool { return f.hub.Stats().Subscriptions == 0 }, 10*time.Second, time.Millisecond)
}

// gatedWriter is a ResponseWriter whose writes wait while the gate is
// closed: a client that stopped reading.
type gatedWriter struct {
	mu     sync.Mutex
	header http.Header
	buf    strings.Builder
	open   chan struct{}
	code   int
}

func (g *gatedWriter) Header() http.Header  { return g.header }
func (g *gatedWriter) WriteHeader(code int) { g.code = code }
func (g *gatedWriter) Write(b []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(b)
}
func (g *gatedWriter) Flush() {}

// A client too slow for its events is cut off with a final "cutoff" frame,
// while the hub goes on serving the others; it resumes from its last id.
func TestSSESlowClientIsCutOff(t *testing.T) {
	rdb, mr := newMini(t)
	f := newFixture(t, redistest.Backend{Name: "miniredis", Client: rdb, Mini: mr}, HubConfig{Buffer: 4})
	h, err := NewSSEHandler(f.hub, f.registry, SSEConfig{Logger: quietLog})
	require.NoError(t, err)
	f.task(t, "t-1", "")
	ctx := context.Background()
	_, err = f.streams.Append(ctx, "t-1", ev(0))
	require.NoError(t, err)

	w := &gatedWriter{header: http.Header{}, open: make(chan struct{})}
	req := httptest.NewRequest(http.MethodGet, "/tasks/t-1/events", nil)
	req.SetPathValue("task_id", "t-1")
	served := make(chan struct{})
	go func() { h.ServeHTTP(w, req); close(served) }()
	// The handler blocks writing the retry hint; the subscription reads ev(0)
	// (and goes live, having read to the end). Then events pile up.
	require.Eventually(t, func() bool { return buffered(f.hub, "t-1") == 1 }, 10*time.Second, time.Millisecond)
	for i := 1; i <= 10; i++ {
		_, err = f.streams.Append(ctx, "t-1", ev(i))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return f.hub.Stats().CutOff == 1 }, 10*time.Second, time.Millisecond)
	close(w.open)
	<-served
	frames, err := readFrames(strings.NewReader(w.buf.String()))
	require.NoError(t, err)
	last := frames[len(frames)-1]
	assert.Equal(t, "cutoff", last.Event)
	assert.Empty(t, last.ID)
	assert.Equal(t, fmt.Sprintf(`{"type":"error","errorText":%q}`, cutoffText), last.Data)
	data, _ := events(frames)
	assert.Equal(t, []string{string(ev(0)), string(ev(1)), string(ev(2)), string(ev(3))}, data)
}

// A client that stops reading its TCP connection is cut off by the write
// timeout: the handler's goroutine and its subscription go.
func TestSSEStuckClientTimesOut(t *testing.T) {
	rdb, mr := newMini(t)
	f := newFixture(t, redistest.Backend{Name: "miniredis", Client: rdb, Mini: mr}, HubConfig{})
	srv := sseServer(t, f, SSEConfig{WriteTimeout: 200 * time.Millisecond})
	f.task(t, "t-1", "")
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", u.Host)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /tasks/t-1/events HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return f.hub.Stats().Subscriptions == 1 }, 10*time.Second, time.Millisecond)
	big := json.RawMessage(`{"type":"text-delta","delta":"` + strings.Repeat("x", 256<<10) + `"}`)
	ctx := context.Background()
	require.Eventually(t, func() bool {
		if _, err := f.streams.Append(ctx, "t-1", big); err != nil {
			t.Fatal(err)
		}
		return f.hub.Stats().Subscriptions == 0
	}, 30*time.Second, 10*time.Millisecond, "the stuck client is cut off")
}

func TestNewSSEHandlerArguments(t *testing.T) {
	rdb, mr := newMini(t)
	f := newFixture(t, redistest.Backend{Name: "miniredis", Client: rdb, Mini: mr}, HubConfig{})
	_, err := NewSSEHandler(nil, f.registry, SSEConfig{})
	require.ErrorIs(t, err, completion.ErrNilArgument)
	_, err = NewSSEHandler(f.hub, nil, SSEConfig{})
	require.ErrorIs(t, err, completion.ErrNilArgument)
	_, err = NewSSEHandler(f.hub, f.registry, SSEConfig{Heartbeat: -time.Second})
	require.ErrorIs(t, err, completion.ErrInvalidConfig)
	assert.ErrorContains(t, err, "SSEConfig.Heartbeat")
}
