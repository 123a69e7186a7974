package dashboard_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestNewOptions(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	a := newInspector(t, rdb, inspect.Config{Stream: "a"})
	b := newInspector(t, rdb, inspect.Config{Stream: "b"})
	a2 := newInspector(t, rdb, inspect.Config{Stream: "a", Group: "other"})
	for _, tc := range []struct {
		name  string
		opts  dashboard.Options
		err   error
		field string // named in the error
	}{
		{"defaults", dashboard.Options{Streams: []*inspect.Inspector{a}}, nil, ""},
		{"everything", dashboard.Options{Streams: []*inspect.Inspector{a, b}, Actions: true, SampleInterval: time.Second,
			Prefix: "/ops/completions/", PageSize: 1000, CSRFKey: make([]byte, 32), Registry: &completion.MemoryRegistry{}}, nil, ""},
		{"no streams", dashboard.Options{}, completion.ErrInvalidConfig, "Streams"},
		{"nil inspector", dashboard.Options{Streams: []*inspect.Inspector{a, nil}}, completion.ErrNilArgument, "Streams[1]"},
		{"stream twice", dashboard.Options{Streams: []*inspect.Inspector{a, a2}}, completion.ErrInvalidConfig, "Streams[1]"},
		{"negative interval", dashboard.Options{Streams: []*inspect.Inspector{a}, SampleInterval: -time.Second}, completion.ErrInvalidConfig, "SampleInterval"},
		{"interval too short", dashboard.Options{Streams: []*inspect.Inspector{a}, SampleInterval: time.Millisecond}, completion.ErrInvalidConfig, "SampleInterval"},
		{"page too big", dashboard.Options{Streams: []*inspect.Inspector{a}, PageSize: 1001}, completion.ErrInvalidConfig, "PageSize"},
		{"negative page", dashboard.Options{Streams: []*inspect.Inspector{a}, PageSize: -1}, completion.ErrInvalidConfig, "PageSize"},
		{"short key", dashboard.Options{Streams: []*inspect.Inspector{a}, CSRFKey: []byte("short")}, completion.ErrInvalidConfig, "CSRFKey"},
		{"prefix without slash", dashboard.Options{Streams: []*inspect.Inspector{a}, Prefix: "ops/"}, completion.ErrInvalidConfig, "Prefix"},
		{"prefix without trailing slash", dashboard.Options{Streams: []*inspect.Inspector{a}, Prefix: "/ops"}, completion.ErrInvalidConfig, "Prefix"},
		{"prefix with markup", dashboard.Options{Streams: []*inspect.Inspector{a}, Prefix: "/\"><x/"}, completion.ErrInvalidConfig, "Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := dashboard.New(tc.opts)
			if tc.err == nil {
				require.NoError(t, err)
				require.NotNil(t, h)
				return
			}
			require.ErrorIs(t, err, tc.err)
			assert.Contains(t, err.Error(), tc.field)
			assert.Nil(t, h)
		})
	}
}

// TestOverview: the overview shows each stream's length, groups with lag
// and pending, consumers and dead letters by reason, as the Inspector
// reads them.
func TestOverview(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream := uniqueStream(t, be.Client)
		backlog(t, be.Client, stream, 12, 5)
		deadLetter(t, be.Client, stream, completion.ReasonTaskNotFound, "task not found", "data", message(1))
		deadLetter(t, be.Client, stream, completion.ReasonTaskNotFound, "task not found", "data", message(2))
		deadLetter(t, be.Client, stream, completion.ReasonMalformed, "not json", "data", "garbage")
		in := newInspector(t, be.Client, inspect.Config{Stream: stream, Group: "g"})
		h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})

		code, page := get(t, h, "/")
		require.Equal(t, http.StatusOK, code, page)
		si, err := in.Info(t.Context())
		require.NoError(t, err)
		g, ok := si.Group("g")
		require.True(t, ok)
		assert.Equal(t, strconv.FormatInt(si.Length, 10), stat(t, page, stream, "length"))
		assert.Equal(t, "12", stat(t, page, stream, "length"))
		assert.Equal(t, "5", stat(t, page, stream, "group-pending"))
		assert.Equal(t, strconv.FormatInt(g.Pending, 10), stat(t, page, stream, "group-pending"))
		if be.Real { // miniredis's lag means nothing
			assert.Equal(t, "7", stat(t, page, stream, "group-lag"))
		}
		assert.Equal(t, "3", stat(t, page, stream, "dead"))
		els := parseHTML(t, page)
		reasons := map[string]string{}
		for _, e := range find(els, "tr", "data-reason", "") {
			reasons[e.Attrs["data-reason"]] = ""
		}
		assert.Len(t, reasons, 2)
		assert.Contains(t, page, "c1", "the consumer is listed")
		assert.Contains(t, page, "No samples yet", "without Run there is no chart")
		assert.Empty(t, find(els, "form", "method", "post"), "read-only: no action")
	})
}

// TestPartitionedOverview: a partitioned stream is one section, with a
// row per partition and its owner.
func TestPartitionedOverview(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream := uniqueStream(t, be.Client)
		const n = 3
		for i := range 9 {
			_, err := completion.Publish(t.Context(), be.Client, stream, completion.Message{OperationID: "op-" + strconv.Itoa(i), TaskID: "t-" + strconv.Itoa(i), Success: true}, completion.WithPartitions(n))
			require.NoError(t, err)
		}
		require.NoError(t, be.Client.Set(t.Context(), completion.PartitionStream(stream, 1, n)+":owner:g", "pod-7", 0).Err())
		in := newInspector(t, be.Client, inspect.Config{Stream: stream, Group: "g", Partitions: n})
		h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})
		code, page := get(t, h, "/")
		require.Equal(t, http.StatusOK, code, page)
		assert.Equal(t, "9", stat(t, page, stream, "length"))
		els := parseHTML(t, page)
		require.Len(t, find(els, "section", "data-stream", ""), 1, "one section for the stream")
		require.Len(t, find(els, "tr", "data-partition", ""), n)
		si, err := in.Info(t.Context())
		require.NoError(t, err)
		require.Equal(t, "pod-7", si.Partitions[1].Owner, "the owner key the test set")
		assert.Contains(t, page, "pod-7")
		for _, p := range si.Partitions {
			assert.Contains(t, page, p.Stream)
		}
	})
}

func TestPrefixAndRoutes(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	in := newInspector(t, rdb, inspect.Config{Stream: "s"})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, Prefix: "/ops/dash/"})
	mux := http.NewServeMux()
	mux.Handle("/ops/dash/", h)
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/ops/dash/", http.StatusOK},
		{"/ops/dash/pending", http.StatusOK},
		{"/ops/dash/dead", http.StatusOK},
		{"/ops/dash/tail", http.StatusOK},
		{"/ops/dash/static/dashboard.css", http.StatusOK},
		{"/ops/dash/static/dashboard.js", http.StatusOK},
		{"/ops/dash/static/", http.StatusNotFound},
		{"/ops/dash/nothing", http.StatusNotFound},
		{"/ops/dash/dead?stream=other", http.StatusNotFound},
		{"/ops/dash/entry?ref=1-1", http.StatusNotFound},
		{"/ops/dash/entry?ref=garbage", http.StatusBadRequest},
		{"/ops/dash/deadletter?ref=1-1", http.StatusNotFound},
		{"/ops/dash/publish", http.StatusForbidden},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, mux, tc.path)
			assert.Equal(t, tc.code, code, body)
		})
	}
	// Outside the prefix (a host that mounts it elsewhere by mistake).
	code, _ := get(t, h, "/elsewhere/")
	assert.Equal(t, http.StatusNotFound, code)
	_, page := get(t, mux, "/ops/dash/")
	for _, e := range parseHTML(t, page) {
		for _, attr := range []string{"href", "src", "action"} {
			if v, ok := e.Attrs[attr]; ok {
				assert.True(t, strings.HasPrefix(v, "/ops/dash/"), "%s %s=%q is under the prefix", e.Name, attr, v)
			}
		}
	}
}

func TestRunSamples(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	backlog(t, rdb, "s", 4, 3)
	in := newInspector(t, rdb, inspect.Config{Stream: "s", Group: "g"})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, SampleInterval: dashboard.MinSampleInterval})
	rounds := make(chan struct{}, 100)
	dashboard.OnSample(h, func() { rounds <- struct{}{} })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	<-rounds
	<-rounds
	require.ErrorIs(t, h.Run(ctx), dashboard.ErrAlreadyRunning)
	_, page := get(t, h, "/")
	assert.NotContains(t, page, "No samples yet")
	els := parseHTML(t, page)
	assert.Len(t, find(els, "polyline", "points", ""), 3, "lag, pending and dead letters")
	cancel()
	require.NoError(t, <-done)
	_ = errors.New
}

// TestChartWindow: the chart keeps the samples of the last hour, and
// spans the time since its oldest one.
func TestChartWindow(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	in := newInspector(t, rdb, inspect.Config{Stream: "s", Group: "g"})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, SampleInterval: dashboard.MinSampleInterval})
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dashboard.SetClock(h, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	rounds := make(chan int, 100)
	n := 0
	dashboard.OnSample(h, func() { // each round 10 minutes after the one before
		mu.Lock()
		now = now.Add(10 * time.Minute)
		mu.Unlock()
		n++
		rounds <- n
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	for <-rounds < 3 {
	}
	_, page := get(t, h, "/")
	assert.Contains(t, page, "3 samples")
	assert.Contains(t, page, "−30m0s", "the span since the oldest sample")
	for <-rounds < 9 {
	}
	cancel()
	require.NoError(t, <-done)
	_, page = get(t, h, "/")
	assert.Contains(t, page, "−1h0m0s", "at most an hour")
	els := parseHTML(t, page)
	for _, p := range find(els, "polyline", "points", "") {
		assert.Len(t, strings.Fields(p.Attrs["points"]), 6, "the samples of the last hour (those of 10 to 60 minutes ago)")
	}
}

// TestDetail: the entry and dead-letter pages show every field, the
// decoded message and, with a registry, the task.
func TestDetail(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream := uniqueStream(t, be.Client)
		id, err := completion.Publish(t.Context(), be.Client, stream, completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true,
			Result: []byte(`{"pages":3}`)}, completion.WithField("traceparent", "00-abc-def-01"))
		require.NoError(t, err)
		dead := deadLetter(t, be.Client, stream, completion.ReasonPermanent, "schema mismatch", "data", message(1))
		in := newInspector(t, be.Client, inspect.Config{Stream: stream})
		reg := &completion.MemoryRegistry{}
		reg.Register(completion.Task{TaskID: "t-1", SessionID: "sess-42", ToolCallID: "call-9", OperationID: "op-1"})
		q := "stream=" + url.QueryEscape(stream)
		for _, tc := range []struct {
			name string
			reg  completion.TaskRegistry
			path string
			want []string
		}{
			{"entry", reg, "/entry?" + q + "&ref=" + id, []string{"traceparent", "00-abc-def-01", "op-1", `&#34;pages&#34;: 3`, "sess-42", "call-9"}},
			{"entry without registry", nil, "/entry?" + q + "&ref=" + id, []string{"op-1", "No task registry"}},
			{"dead letter", reg, "/deadletter?" + q + "&ref=" + dead, []string{"permanent_error", "schema mismatch", "op-1", "sess-42"}},
			{"unknown task", &completion.MemoryRegistry{}, "/deadletter?" + q + "&ref=" + dead, []string{"knows neither the operation nor the task"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}, Registry: tc.reg})
				code, page := get(t, h, tc.path)
				require.Equal(t, http.StatusOK, code, page)
				for _, w := range tc.want {
					assert.Contains(t, page, w)
				}
			})
		}
	})
}
