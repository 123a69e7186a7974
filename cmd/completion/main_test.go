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
	"github.com/streamrelay/completion/inspect"
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
		{[]string{"redrive", "-all", "-range", "a", "b"}, "give one of -all, -reason and -range"},
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
	assert.Contains(t, errOut, "completion info: read the groups of stream")
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
		assert.Contains(t, errOut, "\"1-99999999999999999999\" is not an id")

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

// ---------------------------------------------------------------------------
// -partitions N: all partitions of a partitioned stream at once

// partScenario is a stream split into parts partitions, with a history: a
// partitioned Consumer dead-lettered poison in every partition, then a
// backlog was published of which a crashed consumer read some of every
// partition.
type partScenario struct {
	stream  string
	parts   int
	keys    []string   // partition keys
	length  []int64    // entries per partition
	dead    [][]string // dead-letter ids per partition
	backlog [][]string // backlog ids per partition
	read    int        // backlog entries "crashed" holds in each partition
}

const (
	partUnknown = 10 // completions of unknown tasks t-u0 .. t-u9
	partBacklog = 12 // completions of tasks t-0 .. t-11
	partRead    = 2  // backlog entries "crashed" reads per partition
)

func newPartScenario(t *testing.T, b backend, parts int) *partScenario {
	t.Helper()
	ctx := context.Background()
	s := &partScenario{stream: fmt.Sprintf("completion-cli-test:%08x", rand.Uint32()), parts: parts, read: partRead,
		length: make([]int64, parts), dead: make([][]string, parts), backlog: make([][]string, parts)}
	for i := range parts {
		s.keys = append(s.keys, completion.PartitionStream(s.stream, i, parts))
	}
	t.Cleanup(func() {
		for _, k := range s.keys {
			_ = b.rdb.Del(context.Background(), k, completion.DeadLetterStreamFor(k)).Err()
		}
	})
	in, err := inspect.New(b.rdb, inspect.Config{Stream: s.stream, Partitions: parts})
	require.NoError(t, err)
	for i := range partUnknown {
		task := fmt.Sprintf("t-u%d", i)
		_, err := in.PublishTest(ctx, completion.Message{OperationID: fmt.Sprintf("op-u%d", i), TaskID: task, Success: true})
		require.NoError(t, err)
		p, _ := in.PartitionFor(task)
		s.length[p]++
	}
	// An undecodable entry in the last partition.
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.keys[parts-1], Values: []any{"data", "garbage"}}).Err())
	s.length[parts-1]++
	c, err := completion.NewConsumer(b.rdb, &completion.MemoryRegistry{}, completion.HandlerFunc(func(context.Context, *completion.Completion) error { return nil }), completion.Config{
		Stream: s.stream, Partitions: parts, Group: "g", Consumer: "c1", Block: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	require.Eventually(t, func() bool { return c.Stats().DeadLettered == partUnknown+1 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	for i := range partBacklog {
		task := fmt.Sprintf("t-%d", i)
		id, err := in.PublishTest(ctx, completion.Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: task, Success: true})
		require.NoError(t, err)
		p, _ := in.PartitionFor(task)
		s.backlog[p] = append(s.backlog[p], id)
		s.length[p]++
	}
	for p, k := range s.keys {
		require.Greater(t, len(s.backlog[p]), partRead, "partition %d: too small a backlog: choose other task names", p)
		_, err = b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "crashed", Streams: []string{k, ">"}, Count: partRead, Block: -1}).Result()
		require.NoError(t, err)
		msgs, err := b.rdb.XRange(ctx, completion.DeadLetterStreamFor(k), "-", "+").Result()
		require.NoError(t, err)
		for _, m := range msgs {
			s.dead[p] = append(s.dead[p], m.ID)
		}
		require.NotEmpty(t, s.dead[p], "partition %d got no poison: choose other task names", p)
	}
	return s
}

func (s *partScenario) lengths(t *testing.T, rdb *redis.Client) []int64 {
	t.Helper()
	out := make([]int64, s.parts)
	for p, k := range s.keys {
		n, err := rdb.XLen(context.Background(), k).Result()
		require.NoError(t, err)
		out[p] = n
	}
	return out
}

func TestPartitionsInfo(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		const parts = 3
		s := newPartScenario(t, b, parts)
		base := []string{"-addr", b.addr, "-stream", s.stream, "-group", "g", "-partitions", fmt.Sprint(parts)}
		out, errOut, code := cli(t, append(base, "info")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^Stream\s+`+regexp.QuoteMeta(s.stream)+` \(3 partitions\)$`, out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^Entries\s+%d$`, partUnknown+1+partBacklog), out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^Dead letters\s+%d in the partitions' dead-letter streams$`, partUnknown+1), out)
		lag := func(n int) string {
			if b.real { // miniredis reports the stream length as lag
				return fmt.Sprint(n)
			}
			return `\S+`
		}
		// The totals: the group's pending entries and lag, the consumer's.
		assert.Regexp(t, fmt.Sprintf(`(?m)^g\s+\d+\s+%d\s+%s\s+\d+-\d+$`, parts*partRead, lag(partBacklog-parts*partRead)), out)
		assert.Regexp(t, fmt.Sprintf(`(?m)^g\s+crashed\s+%d\s+\S+$`, parts*partRead), out)
		// A line per partition, and the totals.
		assert.Contains(t, out, "Partitions (pending and lag of group g):")
		assert.Regexp(t, `(?m)^PARTITION\s+STREAM\s+OWNER\s+ENTRIES\s+PENDING\s+LAG\s+DEAD LETTERS$`, out)
		for p, k := range s.keys {
			assert.Regexp(t, fmt.Sprintf(`(?m)^%d\s+%s\s+-\s+%d\s+%d\s+%s\s+%d$`, p, regexp.QuoteMeta(k), s.length[p], partRead,
				lag(len(s.backlog[p])-partRead), len(s.dead[p])), out)
		}
		assert.Regexp(t, fmt.Sprintf(`(?m)^TOTAL\s+%d\s+%d\s+%s\s+%d$`, partUnknown+1+partBacklog, parts*partRead,
			lag(partBacklog-parts*partRead), partUnknown+1), out)

		// -json: the totals, and each partition in full.
		out, errOut, code = cli(t, append(base, "info", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		var info infoJSON
		require.NoError(t, json.Unmarshal([]byte(out), &info), out)
		assert.Equal(t, s.stream, info.Stream)
		assert.Equal(t, int64(partUnknown+1+partBacklog), info.Length)
		assert.Equal(t, int64(partUnknown+1), info.DeadLetterLength)
		assert.Empty(t, info.DeadLetterStream)
		require.Len(t, info.Groups, 1)
		assert.Equal(t, int64(parts*partRead), info.Groups[0].Pending)
		require.Len(t, info.Partitions, parts)
		var length, dead, pending, lagSum int64
		for p, pj := range info.Partitions {
			assert.Equal(t, p, pj.Index)
			assert.Equal(t, s.keys[p], pj.Stream)
			assert.Equal(t, s.length[p], pj.Length)
			assert.Equal(t, completion.DeadLetterStreamFor(s.keys[p]), pj.DeadLetterStream)
			assert.Equal(t, int64(len(s.dead[p])), pj.DeadLetterLength)
			require.Len(t, pj.Groups, 1)
			assert.Equal(t, int64(partRead), pj.Groups[0].Pending)
			assert.Equal(t, s.backlog[p][partRead-1], pj.Groups[0].LastDeliveredID)
			assert.Nil(t, pj.Partitions)
			length += pj.Length
			dead += pj.DeadLetterLength
			pending += pj.Groups[0].Pending
			require.NotNil(t, pj.Groups[0].Lag)
			lagSum += *pj.Groups[0].Lag
		}
		assert.Equal(t, info.Length, length)
		assert.Equal(t, info.DeadLetterLength, dead)
		assert.Equal(t, info.Groups[0].Pending, pending)
		require.NotNil(t, info.Groups[0].Lag)
		assert.Equal(t, *info.Groups[0].Lag, lagSum)

		// -partition I/N still shows one partition.
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "-partition", "1/3", "-json", "info")
		require.Equal(t, exitOK, code, errOut)
		var one infoJSON
		require.NoError(t, json.Unmarshal([]byte(out), &one), out)
		assert.Equal(t, s.keys[1], one.Stream)
		assert.Equal(t, s.length[1], one.Length)
		assert.Nil(t, one.Partitions)
	})
}

func TestPartitionsPendingAndDead(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		const parts = 3
		s := newPartScenario(t, b, parts)
		base := []string{"-addr", b.addr, "-stream", s.stream, "-group", "g", "-partitions", fmt.Sprint(parts)}

		out, errOut, code := cli(t, append(base, "pending")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^PARTITION/ID\s+CONSUMER\s+IDLE\s+DELIVERIES$`, out)
		for p := range parts {
			for _, id := range s.backlog[p][:partRead] {
				assert.Regexp(t, fmt.Sprintf(`(?m)^%d/%s\s+crashed\s+\S+\s+1$`, p, id), out)
			}
			assert.NotContains(t, out, fmt.Sprintf("%d/%s", p, s.backlog[p][partRead]))
		}
		out, errOut, code = cli(t, append(base, "pending", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		var entries []pendingJSON
		require.NoError(t, json.Unmarshal([]byte(out), &entries), out)
		require.Len(t, entries, parts*partRead)
		for _, e := range entries {
			require.NotNil(t, e.Partition)
			assert.Equal(t, s.keys[*e.Partition], e.Stream)
			assert.Contains(t, s.backlog[*e.Partition][:partRead], e.ID)
		}

		out, errOut, code = cli(t, append(base, "dead")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Regexp(t, `(?m)^PARTITION/ID\s+DEAD-LETTERED\s+REASON\s+DELIVERIES\s+SOURCE ID\s+OPERATION\s+TASK\s+ERROR$`, out)
		for p := range parts {
			for _, id := range s.dead[p] {
				assert.Regexp(t, fmt.Sprintf(`(?m)^%d/%s\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+(task_not_found|malformed)\s+1\s`, p, id), out)
			}
		}
		out, errOut, code = cli(t, append(base, "dead", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		var dls []deadJSON
		require.NoError(t, json.Unmarshal([]byte(out), &dls), out)
		require.Len(t, dls, partUnknown+1)
		var all []string
		for _, d := range dls {
			require.NotNil(t, d.Partition)
			p := *d.Partition
			assert.Equal(t, fmt.Sprintf("%d/%s", p, d.ID), d.Ref)
			assert.Equal(t, completion.DeadLetterStreamFor(s.keys[p]), d.DeadLetterStream)
			assert.Equal(t, s.keys[p], d.Stream)
			assert.Contains(t, s.dead[p], d.ID)
			all = append(all, d.Ref)
		}

		// Paging by Ref.
		out, errOut, code = cli(t, append(base, "dead", "-count", "4")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, "More may follow: completion dead -start '("+all[3]+"'")
		out, errOut, code = cli(t, append(base, "dead", "-json", "-start", "("+all[3])...)
		require.Equal(t, exitOK, code, errOut)
		require.NoError(t, json.Unmarshal([]byte(out), &dls), out)
		var rest []string
		for _, d := range dls {
			rest = append(rest, d.Ref)
		}
		assert.Equal(t, all[4:], rest)
	})
}

func TestPartitionsRedriveAndPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 3
		s := newPartScenario(t, b, parts)
		base := []string{"-addr", b.addr, "-stream", s.stream, "-partitions", fmt.Sprint(parts)}
		before := s.lengths(t, b.rdb)

		// One from each partition, by Ref; again: nothing.
		refs := make([]string, parts)
		for p := range parts {
			refs[p] = fmt.Sprintf("%d/%s", p, s.dead[p][0])
		}
		out, errOut, code := cli(t, append(append(base, "redrive"), refs...)...)
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, fmt.Sprintf("Moved 3 dead letters back into their partitions of %s (3 partitions).\n", s.stream), out)
		out, errOut, code = cli(t, append(append(base, "redrive", "-json"), refs...)...)
		require.Equal(t, exitOK, code, errOut)
		assert.JSONEq(t, fmt.Sprintf(`{"redriven":0,"stream":%q,"partitions":3}`, s.stream), out)
		for p, n := range s.lengths(t, b.rdb) {
			assert.Equal(t, before[p]+1, n, "partition %d gets its own dead letter back", p)
		}

		// The rest: each into its own partition, once.
		out, errOut, code = cli(t, append(base, "redrive", "-all", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		assert.JSONEq(t, fmt.Sprintf(`{"redriven":%d,"stream":%q,"partitions":3}`, partUnknown+1-parts, s.stream), out)
		for p, n := range s.lengths(t, b.rdb) {
			assert.Equal(t, before[p]+int64(len(s.dead[p])), n, "partition %d", p)
		}
		out, _, code = cli(t, append(base, "dead")...)
		require.Equal(t, exitOK, code)
		assert.Equal(t, "No dead letters.\n", out)

		// The same id in two partitions: a bare id is refused, a Ref is not.
		for _, p := range []int{0, 2} {
			require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(s.keys[p]), ID: "9999999999999-0",
				Values: []any{"data", fmt.Sprint(p), completion.DeadLetterReasonField, "manual"}}).Err())
		}
		_, errOut, code = cli(t, append(base, "redrive", "9999999999999-0")...)
		assert.Equal(t, exitError, code)
		assert.Contains(t, errOut, "several partitions")
		assert.Contains(t, errOut, "0/9999999999999-0, 2/9999999999999-0")
		_, errOut, code = cli(t, append(base, "purge", "9999999999999-0")...)
		assert.Equal(t, exitError, code, errOut)
		out, errOut, code = cli(t, append(base, "purge", "2/9999999999999-0")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, fmt.Sprintf("Deleted 1 dead letter from the dead-letter streams of the 3 partitions of %s.\n", s.stream), out)
		out, errOut, code = cli(t, append(base, "purge", "9999999999999-0")...)
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, "Deleted 1 dead letter")

		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(s.keys[1]), Values: []any{"data", "x"}}).Err())
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(s.keys[2]), Values: []any{"data", "y"}}).Err())
		out, errOut, code = cli(t, append(base, "purge", "-all", "-yes", "-json")...)
		require.Equal(t, exitOK, code, errOut)
		assert.JSONEq(t, fmt.Sprintf(`{"purged":2,"stream":%q,"partitions":3}`, s.stream), out)
		for p, n := range s.lengths(t, b.rdb) {
			assert.Equal(t, before[p]+int64(len(s.dead[p])), n, "purging leaves partition %d alone", p)
		}
	})
}

func TestPartitionsPublishAndTail(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const parts = 3
		stream := fmt.Sprintf("completion-cli-test:%08x", rand.Uint32())
		t.Cleanup(func() {
			for i := range parts {
				_ = b.rdb.Del(context.Background(), completion.PartitionStream(stream, i, parts)).Err()
			}
		})
		base := []string{"-addr", b.addr, "-stream", stream, "-partitions", fmt.Sprint(parts)}
		in, err := inspect.New(b.rdb, inspect.Config{Stream: stream, Partitions: parts})
		require.NoError(t, err)

		// publish: to the task's partition, as WithPartitions picks it.
		var published []string // Refs
		for i := range 6 {
			task := fmt.Sprintf("t-%d", i)
			p, key := in.PartitionFor(task)
			out, errOut, code := cli(t, append(base, "publish", "-op", fmt.Sprintf("op-%d", i), "-task", task)...)
			require.Equal(t, exitOK, code, errOut)
			m := regexp.MustCompile(`^Published (\d+-\d+) to ` + regexp.QuoteMeta(key) + fmt.Sprintf(` \(partition %d of 3\)\.\n$`, p)).FindStringSubmatch(out)
			require.NotNil(t, m, out)
			got, err := b.rdb.XRange(ctx, key, m[1], m[1]).Result()
			require.NoError(t, err)
			require.Len(t, got, 1)
			published = append(published, fmt.Sprintf("%d/%s", p, m[1]))
		}
		out, errOut, code := cli(t, append(base, "-json", "publish", "-op", "op-j", "-task", "t-j")...)
		require.Equal(t, exitOK, code, errOut)
		var v publishedView
		require.NoError(t, json.Unmarshal([]byte(out), &v), out)
		p, key := in.PartitionFor("t-j")
		assert.Equal(t, key, v.Stream)
		require.NotNil(t, v.Partition)
		assert.Equal(t, p, *v.Partition)
		assert.Equal(t, parts, v.Partitions)
		published = append(published, fmt.Sprintf("%d/%s", p, v.ID))

		// tail: every partition, entries named PARTITION/ID.
		for _, asJSON := range []bool{false, true} {
			tctx, cancel := context.WithCancel(ctx)
			var out, errOut syncBuffer
			done := make(chan int, 1)
			args := append(base, "tail", "-from", "0")
			if asJSON {
				args = append(args, "-json")
			}
			go func() { done <- run(tctx, args, &out, &errOut) }()
			op := fmt.Sprintf("op-live-%v", asJSON)
			_, err := in.PublishTest(ctx, completion.Message{OperationID: op, TaskID: "t-live", Success: false, Error: "boom"})
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
			require.GreaterOrEqual(t, len(lines), len(published)+1, out.String())
			livePart, liveKey := in.PartitionFor("t-live")
			if !asJSON {
				for _, ref := range published {
					assert.Regexp(t, `(?m)^`+ref+`  ok  op=op-\S+ task=t-\S+  null$`, out.String())
				}
				assert.Regexp(t, fmt.Sprintf(`(?m)^%d/\d+-\d+  FAILED  op=%s task=t-live  "boom"$`, livePart, op), out.String())
				assert.Contains(t, errOut.String(), "Following the 3 partitions of "+stream)
				continue
			}
			var refs []string
			for _, l := range lines {
				var e entryJSON
				require.NoError(t, json.Unmarshal([]byte(l), &e), l)
				require.NotNil(t, e.Partition)
				assert.Equal(t, completion.PartitionStream(stream, *e.Partition, parts), e.Stream)
				refs = append(refs, fmt.Sprintf("%d/%s", *e.Partition, e.ID))
				if strings.Contains(string(e.Message), op) {
					assert.Equal(t, livePart, *e.Partition)
					assert.Equal(t, liveKey, e.Stream)
				}
			}
			for _, ref := range published {
				assert.Contains(t, refs, ref)
			}
		}
	})
}

func TestPartitionsUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-partitions", "2", "-partition", "0/2", "info"}, "not both"},
		{[]string{"-partitions", "1025", "info"}, "-partitions is 1025"},
		{[]string{"-partitions", "-1", "info"}, "-partitions is -1"},
		{[]string{"-partitions", "x", "info"}, "invalid value"},
		{[]string{"-stream", "{x}", "-partitions", "2", "info"}, "{hash tag}"},
		{[]string{"redrive", "1/1-0"}, "give -partitions N"},
		{[]string{"purge", "1/1-0"}, "give -partitions N"},
		{[]string{"-partitions", "3", "redrive", "3/1-0"}, "from 0 to 2"},
		{[]string{"-partitions", "3", "redrive", "-range", "0/1-0", "7/1-0"}, "from 0 to 2"},
		{[]string{"-partitions", "3", "dead", "-start", "(5/1-0"}, "from 0 to 2"},
		{[]string{"-partitions", "3", "redrive", "1/x"}, `"1/x" is not a stream entry id`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// No Redis listens at this address: usage errors are found
			// before anything is sent.
			out, errOut, code := cli(t, append([]string{"-addr", "127.0.0.1:1"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stderr: %s", errOut)
			assert.Contains(t, errOut, tt.want)
			assert.Contains(t, errOut, "Run 'completion help")
			assert.Empty(t, out)
		})
	}
}

func TestPartitionsHelp(t *testing.T) {
	out, _, code := cli(t, "help")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "-partitions N")
	assert.Contains(t, out, "Partitioned streams:")
	assert.Contains(t, out, "PARTITION/ID")
	for _, c := range commands {
		out, _, code := cli(t, "help", c.name)
		require.Equal(t, exitOK, code)
		assert.Contains(t, out, "-partitions", "help %s", c.name)
		assert.Contains(t, out, "-partitions 6 "+c.name, "help %s: an example", c.name)
	}
}
