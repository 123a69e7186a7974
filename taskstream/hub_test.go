package taskstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestHubReplayThenLive(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		var want []string
		for i := range 3 {
			_, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			want = append(want, string(ev(i)))
		}
		sub, err := h.Subscribe(ctx, "t-1", "0-0")
		require.NoError(t, err)
		defer sub.Close()
		for i := range 3 {
			e, err := next(t, sub)
			require.NoError(t, err)
			require.Equal(t, want[i], string(e.Data))
		}
		for i := 3; i < 6; i++ {
			_, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			want = append(want, string(ev(i)))
		}
		_, err = s.Finish(ctx, "t-1")
		require.NoError(t, err)
		want = append(want, FinishEvent)
		rest, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		require.Equal(t, want[3:], datas(rest))
	})
}

func TestHubManySubscribersConcurrentWrites(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{Buffer: 8})
		const tasks, events = 50, 20
		var wg sync.WaitGroup
		got := make([][]string, tasks)
		errs := make([]error, tasks)
		for i := range tasks {
			sub, err := h.Subscribe(ctx, fmt.Sprintf("t-%d", i), "")
			require.NoError(t, err)
			wg.Go(func() {
				defer sub.Close()
				evs, err := collect(t, sub)
				got[i], errs[i] = datas(evs), err
			})
		}
		var writers sync.WaitGroup
		for i := range tasks {
			writers.Go(func() {
				for j := range events {
					if _, err := s.Append(ctx, fmt.Sprintf("t-%d", i), ev(j)); err != nil {
						t.Error(err)
					}
				}
				if _, err := s.Finish(ctx, fmt.Sprintf("t-%d", i)); err != nil {
					t.Error(err)
				}
			})
		}
		writers.Wait()
		wg.Wait()
		for i := range tasks {
			require.ErrorIs(t, errs[i], io.EOF, "task %d", i)
			want := make([]string, 0, events+1)
			for j := range events {
				want = append(want, string(ev(j)))
			}
			want = append(want, FinishEvent)
			assert.Equal(t, want, got[i], "task %d", i)
		}
		assert.Eventually(t, func() bool { return h.Stats().Subscriptions == 0 }, 10*time.Second, time.Millisecond)
		assert.Zero(t, h.Stats().CutOff)
	})
}

func TestHubSubscribeFromAnID(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		var ids []string
		for i := range 4 {
			id, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			ids = append(ids, id)
		}
		fid, err := s.Finish(ctx, "t-1")
		require.NoError(t, err)

		sub, err := h.Subscribe(ctx, "t-1", ids[1])
		require.NoError(t, err)
		evs, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, []string{string(ev(2)), string(ev(3)), FinishEvent}, datas(evs))
		assert.Equal(t, fid, sub.LastID())

		// From the finish event, or after it: nothing more, ever.
		for _, from := range []string{fid, "99999999999999-0"} {
			sub, err = h.Subscribe(ctx, "t-1", from)
			require.NoError(t, err)
			evs, err = collect(t, sub)
			require.ErrorIs(t, err, io.EOF, "from %s", from)
			assert.Empty(t, evs)
		}
	})
}

func TestHubBadInput(t *testing.T) {
	rdb, _ := newMini(t)
	h := startHub(t, newTestStreams(t, rdb, Config{}), HubConfig{})
	tests := []struct {
		name, taskID, lastID string
		want                 error
	}{
		{"empty task id", "", "0-0", ErrInvalidTaskID},
		{"long task id", string(make([]byte, MaxTaskIDBytes+1)), "0-0", ErrInvalidTaskID},
		{"task id not UTF-8", "\xc3", "0-0", ErrInvalidTaskID},
		{"malformed last id", "t-1", "yesterday", ErrInvalidID},
		{"incomplete last id", "t-1", "12345", ErrInvalidID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Subscribe(context.Background(), tt.taskID, tt.lastID)
			require.ErrorIs(t, err, tt.want)
		})
	}
	assert.Zero(t, h.Stats().Subscriptions)
}

func TestNewHubRejectsInvalidConfig(t *testing.T) {
	rdb, _ := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	tests := []struct {
		name  string
		cfg   HubConfig
		field string
	}{
		{"negative Buffer", HubConfig{Buffer: -1}, "Buffer"},
		{"negative BufferBytes", HubConfig{BufferBytes: -1}, "BufferBytes"},
		{"ReadCount over Buffer", HubConfig{Buffer: 10, ReadCount: 11}, "ReadCount"},
		{"negative ReadCount", HubConfig{ReadCount: -1}, "ReadCount"},
		{"too many Readers", HubConfig{Readers: MaxReaders + 1}, "Readers"},
		{"negative ReadBatch", HubConfig{ReadBatch: -1}, "ReadBatch"},
		{"short HealthCheckInterval", HubConfig{HealthCheckInterval: time.Millisecond}, "HealthCheckInterval"},
		{"short ResyncInterval", HubConfig{ResyncInterval: 10 * time.Millisecond}, "ResyncInterval"},
		{"negative ErrorBackoff", HubConfig{ErrorBackoff: -time.Second}, "ErrorBackoff"},
		{"MaxErrorBackoff under ErrorBackoff", HubConfig{ErrorBackoff: time.Second, MaxErrorBackoff: time.Millisecond}, "MaxErrorBackoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHub(s, tt.cfg)
			require.ErrorIs(t, err, completion.ErrInvalidConfig)
			assert.Contains(t, err.Error(), "HubConfig."+tt.field+" ")
		})
	}
	_, err := NewHub(nil, HubConfig{})
	require.ErrorIs(t, err, completion.ErrNilArgument)

	h, err := NewHub(s, HubConfig{Buffer: 10})
	require.NoError(t, err)
	cfg := h.Config()
	assert.Equal(t, 10, cfg.ReadCount, "ReadCount defaults to at most Buffer")
	assert.Equal(t, DefaultReaders, cfg.Readers)
	assert.Equal(t, DefaultResyncInterval, cfg.ResyncInterval)
}

func TestHubLifecycle(t *testing.T) {
	rdb, _ := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	h, err := NewHub(s, HubConfig{Logger: quietLog})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = s.Append(ctx, "t-1", ev(1))
	require.NoError(t, err)
	early, err := h.Subscribe(ctx, "t-1", "")
	require.NoError(t, err, "a subscription before Run is served once Run starts")
	assert.False(t, h.Running())

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx) }()
	e, err := next(t, early)
	require.NoError(t, err)
	assert.Equal(t, string(ev(1)), string(e.Data))
	early.Close()
	require.Eventually(t, h.Running, 10*time.Second, time.Millisecond)
	require.ErrorIs(t, h.Run(ctx), ErrHubRunning)

	sub, err := h.Subscribe(ctx, "t-1", "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { sub.mu.Lock(); defer sub.mu.Unlock(); return len(sub.buf) == 1 }, 10*time.Second, time.Millisecond)
	stop()
	require.NoError(t, <-done, "Run returns nil after its context ends")
	assert.False(t, h.Running())

	e, err = next(t, sub)
	require.NoError(t, err, "the buffered event first")
	assert.Equal(t, string(ev(1)), string(e.Data))
	_, err = next(t, sub)
	require.ErrorIs(t, err, ErrHubStopped)
	_, err = h.Subscribe(ctx, "t-1", "")
	require.ErrorIs(t, err, ErrHubStopped, "after Run returned")

	// It runs again.
	h2 := startHubAgain(t, h)
	sub, err = h2.Subscribe(ctx, "t-1", "")
	require.NoError(t, err)
	e, err = next(t, sub)
	require.NoError(t, err)
	assert.Equal(t, string(ev(1)), string(e.Data))
	sub.Close()
	_, err = sub.Next(ctx)
	require.ErrorIs(t, err, ErrClosed)
}

// startHubAgain runs h (which ran before) until the test ends.
func startHubAgain(t *testing.T, h *Hub) *Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, h.Running, 10*time.Second, time.Millisecond)
	return h
}

func TestHubContextEndsSubscription(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		ctx, cancel := context.WithCancel(context.Background())
		sub, err := h.Subscribe(ctx, "t-1", "")
		require.NoError(t, err)
		numsub := func() int64 {
			n, err := b.Client.PubSubNumSub(context.Background(), s.Channel("t-1")).Result()
			require.NoError(t, err)
			return n[s.Channel("t-1")]
		}
		require.Eventually(t, func() bool { return numsub() == 1 }, 10*time.Second, time.Millisecond, "the hub subscribes to the task's channel")
		cancel()
		_, err = sub.Next(context.Background())
		require.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, h.Stats().Subscriptions)
		require.Eventually(t, func() bool { return numsub() == 0 }, 10*time.Second, time.Millisecond, "and unsubscribes when its last subscriber leaves")

		_, err = h.Subscribe(ctx, "t-1", "")
		require.ErrorIs(t, err, context.Canceled, "an ended context subscribes nothing")
	})
}

// A live subscriber that does not take its events is cut off once its
// buffer is full, without holding anyone up; resubscribing from its last id
// resumes with nothing lost.
func TestHubSlowSubscriberIsCutOff(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{Buffer: 4})
		slow, err := h.Subscribe(ctx, "t-1", "")
		require.NoError(t, err)
		fast, err := h.Subscribe(ctx, "t-1", "")
		require.NoError(t, err)
		_, err = s.Append(ctx, "t-1", ev(0))
		require.NoError(t, err)
		for _, sub := range []*Subscription{slow, fast} { // both are live now
			e, err := next(t, sub)
			require.NoError(t, err)
			require.Equal(t, string(ev(0)), string(e.Data))
		}
		var want []string
		for i := 1; i <= 12; i++ {
			_, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			want = append(want, string(ev(i)))
			e, err := next(t, fast) // the fast one keeps up meanwhile
			require.NoError(t, err)
			require.Equal(t, string(ev(i)), string(e.Data))
		}
		require.Eventually(t, func() bool { return h.Stats().CutOff == 1 }, 10*time.Second, time.Millisecond)
		got, err := collect(t, slow)
		require.ErrorIs(t, err, ErrSlowSubscriber)
		assert.Equal(t, want[:4], datas(got), "the buffered events come before the end")

		resumed, err := h.Subscribe(ctx, "t-1", slow.LastID())
		require.NoError(t, err)
		_, err = s.Finish(ctx, "t-1")
		require.NoError(t, err)
		rest, err := collect(t, resumed)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, append(want[4:], FinishEvent), datas(rest))
	})
}

// Replaying history is paced by the subscriber: a small buffer never cuts
// off a subscriber that is catching up.
func TestHubCatchUpIsFlowControlled(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{Buffer: 4, ReadCount: 3})
		var want []string
		for i := range 100 {
			_, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			want = append(want, string(ev(i)))
		}
		sub, err := h.Subscribe(ctx, "t-1", "0-0")
		require.NoError(t, err)
		var got []string
		for i := range 50 {
			e, err := next(t, sub)
			require.NoError(t, err)
			got = append(got, string(e.Data))
			if i%10 == 0 {
				time.Sleep(5 * time.Millisecond) // a slow reader, now and then
			}
		}
		for i := 100; i < 110; i++ { // live writes while it catches up
			_, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			want = append(want, string(ev(i)))
		}
		_, err = s.Finish(ctx, "t-1")
		require.NoError(t, err)
		rest, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		got = append(got, datas(rest)...)
		assert.Equal(t, append(want, FinishEvent), got)
		assert.Zero(t, h.Stats().CutOff)
	})
}

// A second outcome of one operation (written twice after a crash, where the
// writes cannot be one script) is skipped, also by a subscriber that
// resumes after the first.
func TestHubSkipsDuplicateOutcome(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		add := func(data, op string) string {
			id, err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: s.Key("t-1"), Values: []any{"data", data, "operation_id", op}}).Result()
			require.NoError(t, err)
			return id
		}
		out := `{"type":"tool-output-available","toolCallId":"c","toolName":"n","output":"x","success":true}`
		first := add(out, "op-1")
		add(out, "op-1")
		add(FinishEvent, "op-1")

		sub, err := h.Subscribe(ctx, "t-1", "0-0")
		require.NoError(t, err)
		evs, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, []string{out, FinishEvent}, datas(evs))

		sub, err = h.Subscribe(ctx, "t-1", first)
		require.NoError(t, err)
		evs, err = collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, []string{FinishEvent}, datas(evs))
	})
}

// A writer that appends without publishing (one that crashed between XADD
// and PUBLISH) is caught by the periodic resync.
func TestHubResyncFindsUnannouncedEvents(t *testing.T) {
	rdb, _ := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	h := startHub(t, s, HubConfig{ResyncInterval: time.Second})
	ctx := context.Background()
	sub, err := h.Subscribe(ctx, "t-1", "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.Stats().Reads > 0 }, 10*time.Second, time.Millisecond)
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Key("t-1"), Values: []any{"data", FinishEvent}}).Err())
	evs, err := collect(t, sub)
	require.ErrorIs(t, err, io.EOF)
	assert.Equal(t, []string{FinishEvent}, datas(evs))
}

// A stream key of another type ends its subscriptions with the refusal.
func TestHubWrongTypeEndsSubscription(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		require.NoError(t, b.Client.Set(ctx, s.Key("t-1"), "not a stream", 0).Err())
		sub, err := h.Subscribe(ctx, "t-1", "")
		require.NoError(t, err)
		_, err = next(t, sub)
		require.ErrorContains(t, err, "WRONGTYPE")
		assert.Eventually(t, func() bool { return h.Stats().Subscriptions == 0 }, 10*time.Second, time.Millisecond)
	})
}

// The buffer is bounded in bytes too: large events cut a slow live
// subscriber off sooner, and a subscriber replaying large events is paced.
func TestHubBufferBytes(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{BufferBytes: 100})
		big := func(i int) json.RawMessage { // 64 bytes
			return json.RawMessage(fmt.Sprintf(`{"type":"text-delta","delta":"%0*d"}`, 64-len(`{"type":"text-delta","delta":""}`), i))
		}
		require.Len(t, big(1), 64)
		var want []string
		for i := range 20 {
			_, err := s.Append(ctx, "replay", big(i))
			require.NoError(t, err)
			want = append(want, string(big(i)))
		}
		_, err := s.Finish(ctx, "replay")
		require.NoError(t, err)
		sub, err := h.Subscribe(ctx, "replay", "")
		require.NoError(t, err)
		got, err := collect(t, sub)
		require.ErrorIs(t, err, io.EOF)
		assert.Equal(t, append(want, FinishEvent), datas(got), "replay paced by bytes, nothing cut")

		slow, err := h.Subscribe(ctx, "live", "")
		require.NoError(t, err)
		_, err = s.Append(ctx, "live", ev(0))
		require.NoError(t, err)
		_, err = next(t, slow) // live now
		require.NoError(t, err)
		for i := range 3 {
			_, err := s.Append(ctx, "live", big(i))
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool { return h.Stats().CutOff == 1 }, 10*time.Second, time.Millisecond)
		got, err = collect(t, slow)
		require.ErrorIs(t, err, ErrSlowSubscriber)
		assert.Equal(t, []string{string(big(0))}, datas(got), "one 64-byte event fits in 100 bytes, two do not")
	})
}
