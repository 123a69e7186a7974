package inspect_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// The clients an Inspector must accept.
var (
	_ inspect.Client = (*redis.Client)(nil)
	_ inspect.Client = (*redis.ClusterClient)(nil)
	_ inspect.Client = (*redis.Ring)(nil)
	_ inspect.Client = redis.UniversalClient(nil)
)

// plainClient hides all but the inspect.Client methods (Conn among them),
// so that the inspector cannot know that every key is on one node: it
// redrives with XRANGE, XADD, XDEL when the keys' hash tags differ, and
// tails a partitioned stream with a reader per partition, as on a cluster.
type plainClient struct{ inspect.Client }

// uniqueStream returns a stream key no other test uses, in a hash tag of
// its own, and deletes every key it prefixes (its dead-letter stream among
// them) when the test ends.
func uniqueStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "inspect-test:{%s:%08x}")
}

// untaggedStream returns a stream name without a hash tag (a partitioned
// stream's partitions get tags of their own), unique to the test, and
// deletes every key it prefixes when the test ends.
func untaggedStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "inspect-test:%s:%08x")
}

// otherTagDeadStream returns a dead-letter stream key for stream with
// another hash tag than stream's (so that no script may touch both on a
// sharded client), deleted when the test ends.
func otherTagDeadStream(t testing.TB, rdb *redis.Client, stream string) string {
	t.Helper()
	dead := strings.NewReplacer("{", "", "}", "").Replace(stream) + ":dead"
	t.Cleanup(func() { _ = rdb.Del(context.Background(), dead).Err() })
	return dead
}

func newInspector(t testing.TB, client inspect.Client, cfg inspect.Config) *inspect.Inspector {
	t.Helper()
	in, err := inspect.New(client, cfg)
	require.NoError(t, err)
	return in
}

// quietLogger discards logs unless COMPLETION_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("COMPLETION_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a consumer Config with short timings for tests.
func testConfig(stream string) completion.Config {
	return completion.Config{
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
	got   []completion.Completion
	calls chan completion.Completion
	fn    func(c *completion.Completion) error // optional behaviour
}

func newRecorder() *recorder { return &recorder{calls: make(chan completion.Completion, 1000)} }

func (h *recorder) HandleCompletion(ctx context.Context, c *completion.Completion) error {
	cp := *c
	cp.Message.Result = append(json.RawMessage(nil), c.Message.Result...)
	h.mu.Lock()
	h.got = append(h.got, cp)
	h.mu.Unlock()
	defer func() { h.calls <- cp }()
	if h.fn != nil {
		return h.fn(c)
	}
	return nil
}

func (h *recorder) all() []completion.Completion {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]completion.Completion(nil), h.got...)
}

// next waits for the next handler call.
func (h *recorder) next(t testing.TB) completion.Completion {
	t.Helper()
	select {
	case c := <-h.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a handler call")
		return completion.Completion{}
	}
}

// registryWith returns a MemoryRegistry holding valid tasks t-1 .. t-n with
// operations op-1 .. op-n.
func registryWith(n int) *completion.MemoryRegistry {
	reg := &completion.MemoryRegistry{}
	for i := 1; i <= n; i++ {
		reg.Register(completion.Task{TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "tc",
			OperationID: fmt.Sprintf("op-%d", i), Status: "running"})
	}
	return reg
}

// registryForUnknown returns a registry that knows tasks t-u1 .. t-un.
func registryForUnknown(n int) *completion.MemoryRegistry {
	reg := &completion.MemoryRegistry{}
	for i := 1; i <= n; i++ {
		reg.Register(completion.Task{TaskID: fmt.Sprintf("t-u%d", i), SessionID: "s", ToolCallID: "tc", OperationID: fmt.Sprintf("op-u%d", i)})
	}
	return reg
}

func newTestConsumer(t testing.TB, rdb completion.RedisClient, reg completion.TaskRegistry, h completion.CompletionHandler, cfg completion.Config) *completion.Consumer {
	t.Helper()
	c, err := completion.NewConsumer(rdb, reg, h, cfg)
	require.NoError(t, err)
	return c
}

// startConsumer runs a consumer in the background and returns a function
// that stops it and returns Run's error (also called at cleanup).
func startConsumer(t testing.TB, c *completion.Consumer) (stop func() error) {
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

func publish(t testing.TB, rdb completion.XAdder, stream string, m completion.Message) string {
	t.Helper()
	id, err := completion.Publish(context.Background(), rdb, stream, m)
	require.NoError(t, err)
	return id
}

// pendingCount returns the group's pending entry count.
func pendingCount(t testing.TB, rdb redis.UniversalClient, stream, group string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, group).Result()
	require.NoError(t, err)
	return p.Count
}

// deadLetters returns the entries of the stream's default dead-letter
// stream.
func deadLetters(t testing.TB, rdb redis.UniversalClient, stream string) []redis.XMessage {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), completion.DeadLetterStreamFor(stream), "-", "+").Result()
	require.NoError(t, err)
	return msgs
}

func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 15*time.Second, 10*time.Millisecond, append([]any{msg}, args...)...)
}

// poison is an entry a consumer with an empty registry dead-letters.
type poison struct {
	values map[string]any
	reason string
	op     string // operation id when the entry is a valid message
}

// unknownTask returns a valid message entry for a task no registry knows
// (yet): task t-uN, operation op-uN, with the extra fields given as name,
// value pairs.
func unknownTask(n int, extra ...string) poison {
	v := map[string]any{completion.DataField: fmt.Sprintf(`{"operation_id":"op-u%d","task_id":"t-u%d","success":true,"result":{"n":%d},"error":null}`, n, n, n)}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return poison{values: v, reason: completion.ReasonTaskNotFound, op: fmt.Sprintf("op-u%d", n)}
}

// deadLetterPoison adds entries to cfg.Stream and runs a Consumer (with an
// empty registry) until it has dead-lettered all of them. It returns the
// entries' ids in the stream.
func deadLetterPoison(t *testing.T, rdb *redis.Client, cfg completion.Config, entries []poison) []string {
	t.Helper()
	ctx := context.Background()
	ids := make([]string, len(entries))
	for i, e := range entries {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: e.values}).Result()
		require.NoError(t, err)
		ids[i] = id
	}
	c := newTestConsumer(t, rdb, &completion.MemoryRegistry{}, newRecorder(), cfg)
	stop := startConsumer(t, c)
	eventually(t, func() bool {
		return c.Stats().DeadLettered == int64(len(entries)) && pendingCount(t, rdb, cfg.Stream, cfg.Group) == 0
	}, "poison not dead-lettered: %+v", c.Stats())
	require.NoError(t, stop())
	return ids
}

// afterID returns the smallest stream id after id.
func afterID(t testing.TB, id string) string {
	t.Helper()
	ms, seq, ok := strings.Cut(id, "-")
	require.True(t, ok, "%q is not a full id", id)
	n, err := strconv.ParseUint(seq, 10, 64)
	require.NoError(t, err)
	require.Less(t, n, ^uint64(0))
	return ms + "-" + strconv.FormatUint(n+1, 10)
}

// compareIDs orders two full stream ids as Redis does.
func compareIDs(a, b string) int {
	parse := func(s string) (uint64, uint64) {
		ms, seq, _ := strings.Cut(s, "-")
		x, _ := strconv.ParseUint(ms, 10, 64)
		y, _ := strconv.ParseUint(seq, 10, 64)
		return x, y
	}
	am, as := parse(a)
	bm, bs := parse(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as != bs:
		if as < bs {
			return -1
		}
		return 1
	}
	return 0
}

// streamValues returns the fields of the stream's entries after id after.
func streamValues(t testing.TB, rdb redis.UniversalClient, stream, after string) []map[string]string {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, afterID(t, after), "+").Result()
	require.NoError(t, err)
	out := make([]map[string]string, len(msgs))
	for i, m := range msgs {
		out[i] = map[string]string{}
		for k, v := range m.Values {
			out[i][k] = v.(string)
		}
	}
	return out
}

// lastID returns the id of the stream's newest entry ("0-0" when it is
// empty).
func lastID(t testing.TB, rdb redis.UniversalClient, stream string) string {
	t.Helper()
	last, err := rdb.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
	require.NoError(t, err)
	if len(last) == 0 {
		return "0-0"
	}
	return last[0].ID
}

// rawEntryFields reads an entry's fields as Redis keeps them: in order,
// duplicates included (go-redis's XMessage has a map).
func rawEntryFields(t testing.TB, rdb redis.UniversalClient, stream, id string) []string {
	t.Helper()
	res, err := rdb.Do(context.Background(), "XRANGE", stream, id, id).Slice()
	require.NoError(t, err)
	require.Len(t, res, 1)
	var out []string
	for _, v := range res[0].([]any)[1].([]any) {
		out = append(out, v.(string))
	}
	return out
}

func stringValues(v map[string]any) map[string]string {
	out := map[string]string{}
	for k, x := range v {
		out[k] = fmt.Sprint(x)
	}
	return out
}

func deadRefs(dls []inspect.DeadLetter) []string {
	out := []string{}
	for _, dl := range dls {
		out = append(out, dl.Ref)
	}
	return out
}

func sumOf[T int | int64](xs []T) T {
	var n T
	for _, x := range xs {
		n += x
	}
	return n
}

// allDeadLetters returns every dead letter, in one page.
func allDeadLetters(t testing.TB, in *inspect.Inspector) []inspect.DeadLetter {
	t.Helper()
	page, err := in.DeadLetters(context.Background(), inspect.DeadLetterQuery{Count: 10_000})
	require.NoError(t, err)
	require.Empty(t, page.Next)
	return page.DeadLetters
}

// assertPagesDeadLetters pages through the dead letters three at a time,
// each page starting after the last one's ref(dl), and asserts that the
// pages together are dls; then pages again by DeadLetterPage.Next, which
// must agree.
func assertPagesDeadLetters(t *testing.T, in *inspect.Inspector, dls []inspect.DeadLetter, ref func(inspect.DeadLetter) string) {
	t.Helper()
	ctx := context.Background()
	var paged, byNext, all []string
	start := ""
	for {
		page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: start, Count: 3})
		require.NoError(t, err)
		for _, dl := range page.DeadLetters {
			paged = append(paged, ref(dl))
		}
		if len(page.DeadLetters) < 3 {
			break
		}
		start = "(" + ref(page.DeadLetters[len(page.DeadLetters)-1])
	}
	start = ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, len(dls)+2, "DeadLetterPage.Next does not end")
		page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: start, Count: 3})
		require.NoError(t, err)
		for _, dl := range page.DeadLetters {
			byNext = append(byNext, dl.Ref)
		}
		if page.Next == "" {
			break
		}
		require.Len(t, page.DeadLetters, 3, "only a full page has a next one")
		require.Equal(t, "("+page.DeadLetters[2].Ref, page.Next)
		start = page.Next
	}
	for _, dl := range dls {
		all = append(all, ref(dl))
	}
	require.Equal(t, all, paged)
	require.Equal(t, deadRefs(dls), byNext)
}
