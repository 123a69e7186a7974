package completion

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eventLog is an Observer that records events.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) Observe(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) kinds() map[EventKind]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[EventKind]int{}
	for _, e := range l.events {
		m[e.Kind]++
	}
	return m
}

func TestObserverSeesEveryOutcome(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		var events eventLog
		cfg.Observer = &events
		failedOnce := false
		h := newRecorder()
		h.fn = func(c *Completion) error {
			switch c.Message.OperationID {
			case "op-2":
				if !failedOnce {
					failedOnce = true
					return errors.New("transient")
				}
			case "op-3":
				return Permanent(errors.New("bad"))
			}
			return nil
		}
		c := newTestConsumer(t, b.rdb, registryWith(3), h, cfg)
		startConsumer(t, c)
		for _, op := range []string{"op-1", "op-2", "op-3"} {
			publish(t, b.rdb, stream, Message{OperationID: op, TaskID: "t" + op[2:], Success: true})
		}
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"x": "y"}}).Err())
		eventually(t, func() bool {
			k := events.kinds()
			return k[EventHandled] == 2 && k[EventDeadLettered] == 2
		}, "events missing: %v", events.kinds())
		k := events.kinds()
		assert.Equal(t, 2, k[EventFailed], "op-2 once, op-3 once")
		assert.Equal(t, 1, k[EventRetryScheduled])
		events.mu.Lock()
		defer events.mu.Unlock()
		for _, e := range events.events {
			if e.Kind == EventHandled {
				assert.NotEmpty(t, e.EntryID)
				assert.NotEmpty(t, e.OperationID)
				assert.Positive(t, e.Duration)
			}
			if e.Kind == EventDeadLettered {
				assert.Contains(t, []string{ReasonPermanent, ReasonMalformed}, e.Reason)
			}
		}
	})
}

func TestChainOrdersMiddleware(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next CompletionHandler) CompletionHandler {
			return HandlerFunc(func(ctx context.Context, c *Completion) error {
				order = append(order, name+">")
				err := next.HandleCompletion(ctx, c)
				order = append(order, "<"+name)
				return err
			})
		}
	}
	h := Chain(HandlerFunc(func(context.Context, *Completion) error {
		order = append(order, "h")
		return nil
	}), mw("a"), mw("b"))
	require.NoError(t, h.HandleCompletion(context.Background(), &Completion{}))
	assert.Equal(t, []string{"a>", "b>", "h", "<b", "<a"}, order)
}

func TestOversizeIDsAndErrorTextAreDeadLettered(t *testing.T) {
	rdb := newMini(t)
	stream := uniqueStream(t, rdb)
	cfg := testConfig(stream)
	cfg.MaxIDBytes = 16
	cfg.MaxErrorBytes = 32
	h := newRecorder()
	c := newTestConsumer(t, rdb, registryWith(1), h, cfg)
	startConsumer(t, c)
	publish(t, rdb, stream, Message{OperationID: strings.Repeat("o", 17), TaskID: "t-1", Success: true})
	publish(t, rdb, stream, Message{OperationID: "op-1", TaskID: strings.Repeat("t", 17), Success: true})
	publish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Error: strings.Repeat("e", 33)})
	eventually(t, func() bool { return len(deadLetters(t, rdb, stream)) == 3 }, "not dead-lettered")
	for _, dl := range deadLetters(t, rdb, stream) {
		assert.Equal(t, ReasonOversize, dl.Values[DeadLetterReasonField])
	}
	assert.Empty(t, h.all())
}

func TestLogsCannotBeForgedOrFlooded(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	rdb := newMini(t)
	stream := uniqueStream(t, rdb)
	cfg := testConfig(stream)
	cfg.Logger = logger
	cfg.MaxDeliveries = 1
	forged := "op-1\ntime=2026-01-01 level=ERROR msg=\"forged line\""
	reg := &MemoryRegistry{}
	reg.Register(Task{TaskID: "t-1", SessionID: "s", ToolCallID: "tc", OperationID: forged})
	secret := strings.Repeat("SECRET-RESULT ", 1000)
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		return errors.New("failed with payload " + secret + "\n" + "level=ERROR msg=forged")
	})
	c := newTestConsumer(t, rdb, reg, h, cfg)
	startConsumer(t, c)
	publish(t, rdb, stream, Message{OperationID: forged, TaskID: "t-1", Success: true, Result: StringResult(secret)})
	eventually(t, func() bool { return c.Stats().DeadLettered == 1 }, "not dead-lettered")
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		assert.True(t, strings.HasPrefix(line, "time="), "a log line was forged: %q", line)
		assert.Less(t, len(line), 2000, "a log line carries too much of the payload")
	}
	assert.NotContains(t, out, `msg="forged line"`)
	assert.Less(t, strings.Count(out, "SECRET-RESULT"), 40, "results and long errors must not be logged in full")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestLogText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a\nb\tc", `a\nb\tc`},
		{"ü\u2028x", `ü\u2028x`},
		{"bad\xffbyte", `bad\xffbyte`},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, logText(tt.in))
	}
	long := logText(strings.Repeat("x", 1000))
	assert.True(t, strings.HasSuffix(long, "…(1000 bytes)"), long)
	assert.Less(t, len(long), 300)
}

func TestHandlerThatNeverReturnsCannotBlockShutdown(t *testing.T) {
	rdb := newMini(t)
	stream := uniqueStream(t, rdb)
	cfg := testConfig(stream)
	cfg.ShutdownTimeout = 50 * time.Millisecond
	started := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // let the stuck goroutine go before the leak check
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		close(started)
		<-release // ignores ctx
		return nil
	})
	c := newTestConsumer(t, rdb, registryWith(1), h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	publish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
	<-started
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrShutdownTimeout)
	case <-time.After(30 * time.Second):
		t.Fatal("Run blocked on a handler that never returns")
	}
	assert.Equal(t, int64(1), pendingCount(t, rdb, stream, "g"), "the entry stays pending")
}

// slowAcks is a RedisClient whose pipelines (the acker's XACKs) hang until
// released, as a Redis that stopped answering writes would.
type slowAcks struct {
	*redis.Client
	release chan struct{}
}

func (s *slowAcks) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	<-s.release
	return s.Client.Pipelined(ctx, fn)
}

func TestSlowRedisCannotGrowWhatTheConsumerHolds(t *testing.T) {
	rdb := newMini(t)
	ctx := context.Background()
	stream := uniqueStream(t, rdb)
	const n = 3000
	pipe := rdb.Pipeline()
	for i := 0; i < n; i++ {
		m := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
		data, _ := m.MarshalJSON()
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, data}})
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)

	slow := &slowAcks{Client: rdb, release: make(chan struct{})}
	cfg := testConfig(stream)
	cfg.BatchSize, cfg.Concurrency = 50, 4
	c := newTestConsumer(t, slow, registryWith(1), HandlerFunc(func(context.Context, *Completion) error { return nil }), cfg)
	var waiting atomic.Int64 // workers waiting for room in the acker
	c.signal = func(job string) {
		if job == "acker-full" {
			waiting.Add(1)
		}
	}
	stop := startConsumer(t, c)

	// Wait until every worker waits for the acker, which is when the
	// consumer stops taking entries in, then check what it holds against
	// the bound: the batch the acker sends, the batch it holds, a worker's
	// delivery each, and the queue, which the reader tops up with a read
	// (at most BatchSize) while up to Concurrency plus a read's worth
	// (again at most BatchSize) are still queued.
	eventually(t, func() bool { return waiting.Load() >= int64(cfg.Concurrency) }, "the workers never waited for the acker")
	bound := int64(4*cfg.BatchSize + 2*cfg.Concurrency)
	st := c.Stats()
	assert.LessOrEqual(t, st.InFlight, bound, "entries held while Redis does not answer")
	assert.LessOrEqual(t, st.Delivered, bound)
	close(slow.release)
	eventually(t, func() bool { return c.Stats().Handled == n }, "not all handled once Redis answered")
	require.NoError(t, stop())
}
