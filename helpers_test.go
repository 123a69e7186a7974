package completion

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/internal/wire"
	"github.com/stretchr/testify/require"
)

// backend is a Redis the behaviour suite runs against.
type backend struct {
	name string
	real bool // a real redis-server (miniredis otherwise)
	rdb  *redis.Client
	mr   *miniredis.Miniredis // set for miniredis
}

// eachBackend runs f against miniredis and against a real redis-server
// (REDIS_ADDR, or one the tests spawn; see redistest.SharedAddr).
func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		f(t, backend{name: b.Name, real: b.Real, rdb: b.Client, mr: b.Mini})
	})
}

// realClient returns a client to the real Redis the tests share.
func realClient(t testing.TB) *redis.Client {
	t.Helper()
	return redistest.SharedClient(t)
}

// sharedRedisAddr returns the address of the real Redis the tests share.
func sharedRedisAddr(t testing.TB) string {
	t.Helper()
	return redistest.SharedAddr(t)
}

// uniqueStream returns a stream key no other test uses, in a hash tag of
// its own, and deletes it (and its dead-letter stream) when the test ends,
// so that a shared Redis is left as it was.
func uniqueStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "completion-test:{%s:%08x}")
}

// untaggedStream returns a stream name without a hash tag (a partitioned
// stream's partitions get tags of their own), unique to the test, and
// deletes every key it prefixes (partitions, dead-letter streams, owner
// keys, the member set) when the test ends.
func untaggedStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "completion-test:%s:%08x")
}

// quietLogger discards logs unless COMPLETION_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("COMPLETION_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a Config with short timings for tests.
func testConfig(stream string) Config {
	return Config{
		Stream:          stream,
		Group:           "g",
		Consumer:        "c1",
		Block:           200 * time.Millisecond,
		ClaimMinIdle:    300 * time.Millisecond,
		ClaimInterval:   50 * time.Millisecond,
		RetryBackoff:    20 * time.Millisecond,
		MaxRetryBackoff: 100 * time.Millisecond,
		ErrorBackoff:    10 * time.Millisecond,
		MaxErrorBackoff: 100 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		Logger:          quietLogger(),
	}
}

// recorder is a CompletionHandler that records what it is given and can be
// told to fail.
type recorder struct {
	mu    sync.Mutex
	got   []Completion
	calls chan Completion
	fn    func(c *Completion) error // optional behaviour
}

func newRecorder() *recorder { return &recorder{calls: make(chan Completion, 1000)} }

func (h *recorder) HandleCompletion(ctx context.Context, c *Completion) error {
	cp := *c
	cp.Message.Result = append(json.RawMessage(nil), c.Message.Result...)
	h.mu.Lock()
	h.got = append(h.got, cp)
	h.mu.Unlock()
	defer func() { h.calls <- cp }() // also when fn panics
	if h.fn != nil {
		return h.fn(c)
	}
	return nil
}

func (h *recorder) all() []Completion {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Completion(nil), h.got...)
}

// next waits for the next handler call.
func (h *recorder) next(t testing.TB) Completion {
	t.Helper()
	select {
	case c := <-h.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a handler call")
		return Completion{}
	}
}

// registryWith returns a MemoryRegistry holding valid tasks t-1 .. t-n with
// operations op-1 .. op-n.
func registryWith(n int) *MemoryRegistry {
	reg := &MemoryRegistry{}
	for i := 1; i <= n; i++ {
		reg.Register(Task{
			TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "tc",
			OperationID: fmt.Sprintf("op-%d", i), Status: "running",
		})
	}
	return reg
}

// startConsumer runs a consumer in the background and returns a function
// that stops it and returns Run's error.
func startConsumer(t testing.TB, c *Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Error("Run did not return within 30s of cancellation")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newTestConsumer(t testing.TB, rdb RedisClient, reg TaskRegistry, h CompletionHandler, cfg Config) *Consumer {
	t.Helper()
	c, err := NewConsumer(rdb, reg, h, cfg)
	require.NoError(t, err)
	return c
}

func publish(t testing.TB, rdb *redis.Client, stream string, m Message) string {
	t.Helper()
	id, err := Publish(context.Background(), rdb, stream, m)
	require.NoError(t, err)
	return id
}

// pendingCount returns the group's pending entry count.
func pendingCount(t testing.TB, rdb *redis.Client, stream, group string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, group).Result()
	require.NoError(t, err)
	return p.Count
}

// deadLetters returns the entries of the dead-letter stream.
func deadLetters(t testing.TB, rdb *redis.Client, stream string) []redis.XMessage {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), DeadLetterStreamFor(stream), "-", "+").Result()
	require.NoError(t, err)
	return msgs
}

func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 15*time.Second, 10*time.Millisecond, append([]any{msg}, args...)...)
}

// decodeMessage decodes a wire message into m, as the consumer does (the
// decoder's own tests are in internal/wire).
func decodeMessage(data []byte, m *Message) error {
	return wire.Decode(data, (*wire.Message)(m))
}

// hold is a handler's work that takes d: it returns after d, or with the
// context's error when ctx ends first, as a handler should.
func hold(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idleAtLeast waits until every named consumer of the group has been idle
// for at least d, as XINFO CONSUMERS reports (real Redis only).
func idleAtLeast(t testing.TB, rdb redis.Cmdable, stream, group string, d time.Duration, names ...string) {
	t.Helper()
	eventually(t, func() bool {
		cs, err := rdb.XInfoConsumers(context.Background(), stream, group).Result()
		if err != nil {
			return false
		}
		idle := map[string]time.Duration{}
		for _, c := range cs {
			idle[c.Name] = c.Idle
		}
		for _, n := range names {
			if i, ok := idle[n]; !ok || i < d {
				return false
			}
		}
		return true
	}, "consumers %v not idle for %v", names, d)
}
