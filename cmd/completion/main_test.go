package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the program with args and returns its output and exit status.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// backend is a Redis to run the commands against.
type backend struct {
	real bool
	addr string
	rdb  *redis.Client
}

// eachBackend runs f against miniredis and a real Redis (REDIS_ADDR, or a
// redis-server the test spawns).
func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		f(t, backend{addr: mr.Addr(), rdb: client(t, mr.Addr())})
	})
	t.Run("redis", func(t *testing.T) {
		addr := redistest.Addr(t)
		f(t, backend{real: true, addr: addr, rdb: client(t, addr)})
	})
}

func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb, err := newClient(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// uniqueStream returns a stream key of this test and deletes it, and its
// dead-letter stream, when the test ends.
func uniqueStream(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	// No hash tag: the dead-letter stream is "{key}:dead".
	key := fmt.Sprintf("completion-cli-test:%08x", rand.Uint32())
	t.Cleanup(func() { _ = rdb.Del(context.Background(), key, completion.DeadLetterStreamFor(key)).Err() })
	return key
}

// scenario is a stream with a history: poison entries a consumer
// dead-lettered, then a backlog of which a crashed consumer read some.
type scenario struct {
	stream     string
	poison     []string // ids in the stream
	backlog    []string // ids in the stream
	pending    int      // read by "crashed", not acknowledged
	deadLetter []string // ids in the dead-letter stream
}

const (
	garbage  = 2 // undecodable entries
	unknown  = 3 // entries for tasks no registry knows
	backlog  = 10
	crashed  = 4 // backlog entries the crashed consumer holds
	deadSize = garbage + unknown
)

func newScenario(t *testing.T, b backend) scenario {
	t.Helper()
	ctx := context.Background()
	s := scenario{stream: uniqueStream(t, b.rdb), pending: crashed}
	for i := range garbage {
		id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, Values: []any{"data", fmt.Sprintf("garbage %d", i)}}).Result()
		require.NoError(t, err)
		s.poison = append(s.poison, id)
	}
	for i := range unknown {
		id, err := completion.Publish(ctx, b.rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-u%d", i), TaskID: fmt.Sprintf("t-u%d", i), Success: true})
		require.NoError(t, err)
		s.poison = append(s.poison, id)
	}
	c, err := completion.NewConsumer(b.rdb, &completion.MemoryRegistry{}, completion.HandlerFunc(func(context.Context, *completion.Completion) error { return nil }), completion.Config{
		Stream: s.stream, Group: "g", Consumer: "c1", Block: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	require.Eventually(t, func() bool { return c.Stats().DeadLettered == deadSize }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	for i := range backlog {
		id, err := completion.Publish(ctx, b.rdb, s.stream, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		require.NoError(t, err)
		s.backlog = append(s.backlog, id)
	}
	_, err = b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "crashed", Streams: []string{s.stream, ">"}, Count: crashed, Block: -1}).Result()
	require.NoError(t, err)
	dls, err := b.rdb.XRange(ctx, completion.DeadLetterStreamFor(s.stream), "-", "+").Result()
	require.NoError(t, err)
	for _, m := range dls {
		s.deadLetter = append(s.deadLetter, m.ID)
	}
	require.Len(t, s.deadLetter, deadSize)
	return s
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"-help"}} {
		out, errOut, code := cli(t, args...)
		require.Equal(t, exitOK, code, "%v: %s", args, errOut)
		assert.Empty(t, errOut)
		for _, c := range commands {
			assert.Contains(t, out, "\n  "+c.name, "%v: command %s listed", args, c.name)
			assert.Contains(t, out, "e.g. completion "+c.name, "%v: an example of %s", args, c.name)
		}
		assert.Contains(t, out, "-addr")
		assert.Contains(t, out, "Exit status")
	}
	for _, c := range commands {
		for _, args := range [][]string{{"help", c.name}, {c.name, "-h"}} {
			out, _, code := cli(t, args...)
			require.Equal(t, exitOK, code, "%v", args)
			assert.Contains(t, out, "Usage: completion [global flags] "+c.name)
			assert.Contains(t, out, "Examples:\n  completion "+c.name)
		}
	}
	out, _, _ := cli(t, "help", "redrive")
	assert.Contains(t, out, "-range")
	assert.Contains(t, out, "exactly once")
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"-nope", "info"}, "flag provided but not defined: -nope"},
		{[]string{"info", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"info", "extra"}, "info takes no arguments"},
		{[]string{"pending", "-count", "0"}, "-count is 0"},
		{[]string{"pending", "-count", "x"}, "invalid value"},
		{[]string{"dead", "-count", "-1"}, "-count is -1"},
		{[]string{"redrive"}, "give the ids"},
		{[]string{"redrive", "-all", "-range", "a", "b"}, "not both"},
		{[]string{"redrive", "-range", "1-0"}, "-range takes two arguments"},
		{[]string{"redrive", "-all", "1-0"}, "-all takes no ids"},
		{[]string{"redrive", "-limit", "3", "1-0"}, "-limit goes with -all or -range"},
		{[]string{"redrive", "nonsense"}, `"nonsense" is not a stream entry id`},
		{[]string{"redrive", "-range", "-", "1-x"}, `"1-x" is not a stream entry id`},
		{[]string{"purge", "1-0", "+"}, `"+" is not a stream entry id`},
		{[]string{"purge"}, "give the ids"},
		{[]string{"purge", "-all"}, "add -yes"},
		{[]string{"publish", "-task", "t"}, "-op and -task are required"},
		{[]string{"publish", "-op", "o", "-task", "t", "-error", "boom"}, "-error goes with -success=false"},
		{[]string{"publish", "-op", "o", "-task", "t", "-success=false", "-error", "x", "-result", "null"}, "not both"},
		{[]string{"publish", "-op", "o", "-task", "t", "-result", "plain text"}, "needs JSON quotes"},
		{[]string{"publish", "-op", "o", "-task", "t", "-result", "42"}, "-result"},
		{[]string{"-timeout", "0", "info"}, "-timeout is 0s"},
		{[]string{"-addr", "redis://[bad", "info"}, "-addr"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// No Redis listens at this address: usage errors are found
			// before connecting.
			out, errOut, code := cli(t, append([]string{"-addr", "127.0.0.1:1"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stderr: %s", errOut)
			assert.Contains(t, errOut, tt.want)
			assert.Contains(t, errOut, "Run 'completion help")
			assert.Empty(t, out)
		})
	}
}

func TestRedisUnreachableIsARuntimeError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	out, errOut, code := cli(t, "-addr", addr, "-timeout", "3s", "info")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errOut, "connection refused")
	assert.Contains(t, errOut, "completion: info:")
	assert.Empty(t, out)
}

func TestInfo(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := newScenario(t, b)
		out, errOut, code := cli(t, "-addr", b.addr, "-stream", s.stream, "info")
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^Stream\s+`+regexp.QuoteMeta(s.stream)+`$`, out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^Entries\s+%d$`, deadSize+backlog), out)
		assert.Regexp(t, `(?m)^First entry\s+`+s.poison[0]+` \(.* ago\)$`, out)
		assert.Regexp(t, `(?m)^Last entry\s+`+s.backlog[backlog-1]+` \(.* ago\)$`, out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^Dead letters\s+%d in %s$`, deadSize, regexp.QuoteMeta("{"+s.stream+"}:dead")), out)
		assert.Regexp(t, `(?m)^GROUP\s+CONSUMERS\s+PENDING\s+LAG\s+LAST DELIVERED$`, out)
		lag := `\S+`
		if b.real { // miniredis reports the stream length as lag
			lag = fmt.Sprint(backlog - crashed)
		}
		assert.Regexp(t, fmt.Sprintf(`(?m)^g\s+\d+\s+%d\s+%s\s+%s$`, crashed, lag, s.backlog[crashed-1]), out)
		assert.Regexp(t, `(?m)^GROUP\s+CONSUMER\s+PENDING\s+IDLE$`, out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^g\s+crashed\s+%d\s+\S+$`, crashed), out)

		// Global flags after the command, and -json.
		out, errOut, code = cli(t, "info", "-json", "-addr", b.addr, "-stream", s.stream)
		require.Equal(t, exitOK, code, errOut)
		var info infoJSON
		require.NoError(t, json.Unmarshal([]byte(out), &info), out)
		assert.Equal(t, s.stream, info.Stream)
		assert.True(t, info.Exists)
		assert.Equal(t, int64(deadSize+backlog), info.Length)
		assert.Equal(t, s.poison[0], info.FirstID)
		assert.Equal(t, s.backlog[backlog-1], info.LastID)
		assert.Equal(t, "{"+s.stream+"}:dead", info.DeadLetterStream)
		assert.Equal(t, int64(deadSize), info.DeadLetterLength)
		require.Len(t, info.Groups, 1)
		g := info.Groups[0]
		assert.Equal(t, "g", g.Name)
		assert.Equal(t, int64(crashed), g.Pending)
		assert.Equal(t, s.backlog[crashed-1], g.LastDeliveredID)
		if b.real {
			require.NotNil(t, g.Lag)
			assert.Equal(t, int64(backlog-crashed), *g.Lag)
		}
		var names []string
		for _, c := range g.Consumers {
			names = append(names, c.Name)
			if c.Name == "crashed" {
				assert.Equal(t, int64(crashed), c.Pending)
			}
		}
		assert.Contains(t, names, "crashed")
		// The raw form has the documented keys.
		var raw map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &raw))
		for _, k := range []string{"stream", "exists", "length", "first_id", "last_id", "dead_letter_stream", "dead_letter_length", "groups"} {
			assert.Contains(t, raw, k)
		}

		// A stream that does not exist.
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream+"-missing", "info")
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, "(does not exist)")
		assert.Contains(t, out, "No consumer groups.")
	})
}

func TestPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := newScenario(t, b)
		out, errOut, code := cli(t, "-addr", b.addr, "-stream", s.stream, "-group", "g", "pending")
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^ID\s+CONSUMER\s+IDLE\s+DELIVERIES$`, out)
		for _, id := range s.backlog[:crashed] {
			assert.Regexp(t, `(?m)^`+id+`\s+crashed\s+\S+\s+1$`, out)
		}
		assert.NotContains(t, out, s.backlog[crashed])

		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "-group", "g", "pending", "-count", "2", "-json")
		require.Equal(t, exitOK, code, errOut)
		var entries []pendingJSON
		require.NoError(t, json.Unmarshal([]byte(out), &entries))
		require.Len(t, entries, 2)
		assert.Equal(t, pendingJSON{ID: s.backlog[0], Consumer: "crashed", IdleMS: entries[0].IdleMS, Deliveries: 1}, entries[0])

		_, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "-group", "nope", "pending")
		assert.Equal(t, exitError, code)
		assert.Contains(t, errOut, "NOGROUP")
	})
}

func TestDead(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := newScenario(t, b)
		out, errOut, code := cli(t, "-addr", b.addr, "-stream", s.stream, "dead")
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^ID\s+DEAD-LETTERED\s+REASON\s+DELIVERIES\s+SOURCE ID\s+OPERATION\s+TASK\s+ERROR$`, out)
		reasonColumn := func(reason string) int {
			return len(regexp.MustCompile(`(?m)^\d+-\d+\s+\S+ \S+\s+`+reason+`\s`).FindAllString(out, -1))
		}
		assert.Equal(t, garbage, reasonColumn("malformed"))
		assert.Equal(t, unknown, reasonColumn("task_not_found"))
		for _, id := range s.deadLetter {
			assert.Regexp(t, `(?m)^`+id+`\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\S+\s+1\s+\d+-\d+\s`, out)
		}
		assert.Regexp(t, `(?m)\s+op-u0\s+t-u0\s+completion: task not found`, out)
		assert.NotContains(t, out, "More may follow")

		// Paging.
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "dead", "-count", "2")
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, "More may follow: completion dead -start '("+s.deadLetter[1]+"'")
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "dead", "-start", "("+s.deadLetter[1], "-json")
		require.Equal(t, exitOK, code, errOut)
		var dls []deadJSON
		require.NoError(t, json.Unmarshal([]byte(out), &dls), out)
		require.Len(t, dls, deadSize-2)
		assert.Equal(t, s.deadLetter[2], dls[0].ID)

		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "dead", "-json")
		require.Equal(t, exitOK, code, errOut)
		require.NoError(t, json.Unmarshal([]byte(out), &dls), out)
		require.Len(t, dls, deadSize)
		reasons := map[string]int{}
		for _, d := range dls {
			reasons[d.Reason]++
			assert.Equal(t, "g", d.Group)
			assert.Equal(t, "c1", d.Consumer)
			assert.Equal(t, s.stream, d.Stream)
			assert.Contains(t, s.poison, d.SourceID)
			assert.NotNil(t, d.Time)
			assert.Contains(t, d.Fields, "data")
			if d.Reason == completion.ReasonMalformed {
				assert.Equal(t, "null", string(d.Message))
				assert.NotEmpty(t, d.DecodeError)
				continue
			}
			var compact bytes.Buffer
			require.NoError(t, json.Compact(&compact, d.Message))
			assert.Regexp(t, `^\{"operation_id":"op-u\d","task_id":"t-u\d","success":true,"result":null,"error":null\}$`, compact.String())
		}
		assert.Equal(t, map[string]int{completion.ReasonMalformed: garbage, completion.ReasonTaskNotFound: unknown}, reasons)
	})
}

func TestRedriveAndPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := newScenario(t, b)
		length := func() int64 {
			n, err := b.rdb.XLen(ctx, s.stream).Result()
			require.NoError(t, err)
			return n
		}
		before := length()
		base := []string{"-addr", b.addr, "-stream", s.stream}

		out, errOut, code := cli(t, append(base, "redrive", s.deadLetter[0])...)
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, fmt.Sprintf("Moved 1 dead letter back to %s.\n", s.stream), out)
		out, _, code = cli(t, append(base, "redrive", s.deadLetter[0])...)
		require.Equal(t, exitOK, code)
		assert.Equal(t, fmt.Sprintf("Moved 0 dead letters back to %s.\n", s.stream), out)
		assert.Equal(t, before+1, length())

		out, errOut, code = cli(t, append(base, "redrive", "-json", "-range", s.deadLetter[1], s.deadLetter[2])...)
		require.Equal(t, exitOK, code, errOut)
		assert.JSONEq(t, fmt.Sprintf(`{"redriven":2,"stream":%q}`, s.stream), out)

		out, errOut, code = cli(t, append(base, "redrive", "-all")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, fmt.Sprintf("Moved %d dead letters back to %s.\n", deadSize-3, s.stream), out)
		assert.Equal(t, before+deadSize, length())

		out, _, code = cli(t, append(base, "dead")...)
		require.Equal(t, exitOK, code)
		assert.Equal(t, "No dead letters.\n", out)

		// An id Redis refuses (a sequence beyond 64 bits) is a runtime error.
		_, errOut, code = cli(t, append(base, "redrive", "1-99999999999999999999")...)
		assert.Equal(t, exitError, code)
		assert.Contains(t, errOut, "redrive dead letter 1-99999999999999999999")

		// Purge: by id, then all.
		dead := completion.DeadLetterStreamFor(s.stream)
		var ids []string
		for i := range 3 {
			id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: dead, Values: []any{"data", fmt.Sprint(i), completion.DeadLetterReasonField, "manual"}}).Result()
			require.NoError(t, err)
			ids = append(ids, id)
		}
		out, errOut, code = cli(t, append(base, "purge", ids[0], "1-1")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, fmt.Sprintf("Deleted 1 dead letter from %s.\n", dead), out)
		_, _, code = cli(t, append(base, "purge", "-all")...)
		assert.Equal(t, exitUsage, code)
		out, errOut, code = cli(t, append(base, "purge", "-all", "-yes", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		assert.JSONEq(t, fmt.Sprintf(`{"purged":2,"stream":%q}`, dead), out)
		n, err := b.rdb.XLen(ctx, dead).Result()
		require.NoError(t, err)
		assert.Zero(t, n)
	})
}

func TestPublish(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		tests := []struct {
			args []string
			want string
		}{
			{[]string{"-op", "op-1", "-task", "t-1", "-result", `{"z": 1, "a": "<&>"}`}, `{"operation_id":"op-1","task_id":"t-1","success":true,"result":{"z":1,"a":"<&>"},"error":null}`},
			{[]string{"-op", "op-2", "-task", "t-1", "-result", `"done"`}, `{"operation_id":"op-2","task_id":"t-1","success":true,"result":"done","error":null}`},
			{[]string{"-op", "op-3", "-task", "t-1", "-success=false", "-error", "tool crashed"}, `{"operation_id":"op-3","task_id":"t-1","success":false,"result":null,"error":"tool crashed"}`},
		}
		for _, tt := range tests {
			out, errOut, code := cli(t, append([]string{"-addr", b.addr, "-stream", stream, "publish"}, tt.args...)...)
			require.Equal(t, exitOK, code, errOut)
			m := regexp.MustCompile(`^Published (\d+-\d+) to ` + regexp.QuoteMeta(stream) + `\.\n$`).FindStringSubmatch(out)
			require.NotNil(t, m, out)
			got, err := b.rdb.XRange(ctx, stream, m[1], m[1]).Result()
			require.NoError(t, err)
			require.Len(t, got, 1)
			assert.Equal(t, map[string]any{"data": tt.want}, got[0].Values)
		}
		out, errOut, code := cli(t, "-addr", b.addr, "-stream", stream, "-json", "publish", "-op", "op-4", "-task", "t-4")
		require.Equal(t, exitOK, code, errOut)
		var v publishedView
		require.NoError(t, json.Unmarshal([]byte(out), &v))
		assert.Equal(t, stream, v.Stream)
		assert.Regexp(t, `^\d+-\d+$`, v.ID)
	})
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestTail(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		_, err := completion.Publish(ctx, b.rdb, stream, completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: completion.StringResult("x")})
		require.NoError(t, err)
		_, err = b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", "garbage"}}).Result()
		require.NoError(t, err)

		for _, asJSON := range []bool{false, true} {
			tctx, cancel := context.WithCancel(ctx)
			var out, errOut syncBuffer
			done := make(chan int, 1)
			args := []string{"-addr", b.addr, "-stream", stream, "-timeout", "50ms", "tail", "-from", "0"}
			if asJSON {
				args = append(args, "-json")
			}
			go func() { done <- run(tctx, args, &out, &errOut) }()
			op := fmt.Sprintf("op-live-%v", asJSON)
			_, err = completion.Publish(ctx, b.rdb, stream, completion.Message{OperationID: op, TaskID: "t-2", Success: false, Error: "boom"})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return strings.Contains(out.String(), op) }, 10*time.Second, 10*time.Millisecond, "tail printed: %s", out.String())
			cancel()
			select {
			case code := <-done:
				assert.Equal(t, exitOK, code, errOut.String())
			case <-time.After(5 * time.Second):
				t.Fatal("tail did not stop when its context ended")
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			require.GreaterOrEqual(t, len(lines), 3, out.String())
			if !asJSON {
				assert.Regexp(t, `^\d+-\d+  ok  op=op-1 task=t-1  "x"$`, lines[0])
				assert.Regexp(t, `^\d+-\d+  UNDECODABLE completion: malformed message.*  data="garbage"$`, lines[1])
				assert.Regexp(t, `  FAILED  op=`+op+` task=t-2  "boom"$`, lines[len(lines)-1])
				assert.Contains(t, errOut.String(), "Ctrl-C")
				continue
			}
			var first, second entryJSON
			require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
			require.NoError(t, json.Unmarshal([]byte(lines[1]), &second))
			assert.JSONEq(t, `{"operation_id":"op-1","task_id":"t-1","success":true,"result":"x","error":null}`, string(first.Message))
			assert.Equal(t, "null", string(second.Message))
			assert.NotEmpty(t, second.DecodeError)
			assert.Equal(t, map[string]string{"data": "garbage"}, second.Fields)
		}
	})
}

func TestPartitionFlag(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := client(t, mr.Addr())
	ctx := context.Background()
	stream := fmt.Sprintf("cli-partitioned-%08x", rand.Uint32())
	// A producer publishing to 3 partitions; the CLI looks at each.
	for i := 0; i < 12; i++ {
		_, err := completion.Publish(ctx, rdb, stream, completion.Message{
			OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true,
		}, completion.WithPartitions(3))
		require.NoError(t, err)
	}
	total := 0
	for i := 0; i < 3; i++ {
		out, errOut, code := cli(t, "-addr", mr.Addr(), "-stream", stream, "-partition", fmt.Sprintf("%d/3", i), "-json", "info")
		require.Equal(t, exitOK, code, errOut)
		var info struct {
			Stream string `json:"stream"`
			Length int    `json:"length"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &info))
		assert.Equal(t, completion.PartitionStream(stream, i, 3), info.Stream)
		total += info.Length
	}
	assert.Equal(t, 12, total, "the partitions together hold every message")

	for _, bad := range []string{"3/3", "x", "1/0", "-1/2", "1/2/3"} {
		_, errOut, code := cli(t, "-addr", mr.Addr(), "-stream", stream, "-partition", bad, "info")
		assert.Equal(t, exitUsage, code, "-partition %s: %s", bad, errOut)
	}
}
