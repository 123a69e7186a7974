package taskstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/redisregistry"
)

// testConfig returns stream keys of the test's own: the Python layout on a
// miniredis of its own, unique prefixes (deleted at the end) on the shared
// real Redis.
func testConfig(t testing.TB, b redistest.Backend) Config {
	t.Helper()
	if !b.Real {
		return Config{}
	}
	p := redistest.Key(t, b.Client, "taskstream-test:%s:%08x:")
	return Config{Prefix: p + "stream:", ChannelPrefix: p + "pubsub:"}
}

func newTestStreams(t testing.TB, c Client, cfg Config) *Streams {
	t.Helper()
	s, err := New(c, cfg)
	require.NoError(t, err)
	return s
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// startHub runs a hub over s until the test ends.
func startHub(t testing.TB, s *Streams, cfg HubConfig) *Hub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	h, err := NewHub(s, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Errorf("Hub.Run did not return within 30s of its context's end")
		}
	})
	require.Eventually(t, h.Running, 10*time.Second, time.Millisecond)
	return h
}

// ev makes a test event.
func ev(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"type":"text-delta","delta":"%d"}`, i))
}

// next takes the next event within a generous timeout.
func next(t testing.TB, s *Subscription) (Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := s.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no event for task %q within 20s", s.TaskID())
	}
	return e, err
}

// collect takes events until the subscription ends, and returns them with
// the error that ended it.
func collect(t testing.TB, s *Subscription) ([]Event, error) {
	t.Helper()
	var out []Event
	for {
		e, err := next(t, s)
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

// datas returns the events' JSON as strings.
func datas(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Data)
	}
	return out
}

// fixture is what a test of the handler, Await or the SSE handler needs:
// streams, a registry and a running hub, on one backend.
type fixture struct {
	b        redistest.Backend
	streams  *Streams
	registry *redisregistry.Registry
	hub      *Hub
	prefix   string // of every key of the test ("" on miniredis: the Python layout)
}

func newFixture(t *testing.T, b redistest.Backend, hcfg HubConfig) *fixture {
	t.Helper()
	f := &fixture{b: b}
	var rcfg redisregistry.Config
	var scfg Config
	if b.Real {
		f.prefix = redistest.Key(t, b.Client, "taskstream-test:%s:%08x:")
		rcfg = redisregistry.Config{MetaPrefix: f.prefix + "task:meta:", OpPrefix: f.prefix + "task:op:"}
		scfg = Config{Prefix: f.prefix + "stream:", ChannelPrefix: f.prefix + "pubsub:"}
	}
	var err error
	f.registry, err = redisregistry.New(b.Client, rcfg)
	require.NoError(t, err)
	f.streams = newTestStreams(t, b.Client, scfg)
	f.hub = startHub(t, f.streams, hcfg)
	return f
}

// task registers a running task.
func (f *fixture) task(t testing.TB, id, user string) completion.Task {
	t.Helper()
	task := completion.Task{TaskID: id, SessionID: "s-" + id, UserID: user, ToolCallID: "call-" + id,
		ToolName: "create_agent", OperationID: "op-" + id, Status: redisregistry.StatusRunning}
	require.NoError(t, f.registry.Register(context.Background(), task))
	return task
}

func (f *fixture) status(t testing.TB, id string) string {
	t.Helper()
	task, err := f.registry.LookupTask(context.Background(), "", id)
	require.NoError(t, err)
	return task.Status
}

// rawEntries reads a task stream's entries as field lists, in order.
func (f *fixture) rawEntries(t testing.TB, taskID string) [][]string {
	t.Helper()
	res, err := f.b.Client.Do(context.Background(), "XRANGE", f.streams.Key(taskID), "-", "+").Slice()
	require.NoError(t, err)
	var out [][]string
	for _, e := range res {
		var fields []string
		for _, v := range e.([]any)[1].([]any) {
			fields = append(fields, v.(string))
		}
		out = append(out, fields)
	}
	return out
}

// buffered returns how many events the first subscription of a task holds.
func buffered(h *Hub, taskID string) int {
	h.mu.Lock()
	t := h.tasks[taskID]
	var s *Subscription
	if t != nil && len(t.subs) > 0 {
		s = t.subs[0]
	}
	h.mu.Unlock()
	if s == nil {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf)
}
