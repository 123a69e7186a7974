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

	"github.com/streamrelay/completion/internal/redistest"
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
