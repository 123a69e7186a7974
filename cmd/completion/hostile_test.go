package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
)

// TestPasswordNeverPrinted: a Redis URL's password shows in no message,
// whether the URL comes from -addr or REDIS_ADDR, whatever fails.
func TestPasswordNeverPrinted(t *testing.T) {
	const secret = "Hunter2Secret"
	for _, addr := range []string{
		"redis://ops:" + secret + "@127.0.0.1:7401/abc",  // invalid database number
		"redis://ops:" + secret + "@127.0.0.1:1/0",       // nothing listens there
		"redis://:" + secret + "@127.0.0.1:7401/0?x=%zz", // bad query escape
		"rediss://ops:" + secret + "@[::1:7401/0",        // bad host
		"redis://ops:Hunter2%53ecret@127.0.0.1:7401/abc", // escaped password
	} {
		t.Run(addr, func(t *testing.T) {
			for _, viaEnv := range []bool{false, true} {
				var args []string
				if viaEnv {
					t.Setenv("REDIS_ADDR", addr)
				} else {
					args = []string{"-addr", addr}
				}
				for _, cmd := range [][]string{{"info"}, {"info", "-json"}, {"pending"}, {"dead", "-json"}} {
					out, errOut, code := cli(t, append(append(args, "-timeout", "300ms"), cmd...)...)
					assert.NotEqual(t, exitOK, code)
					assert.NotContains(t, out+errOut, secret, "%v env=%v: %s%s", cmd, viaEnv, out, errOut)
				}
			}
		})
	}
	out, errOut, _ := cli(t, "-addr", "redis://ops:"+secret+"@127.0.0.1:7401/abc", "info")
	assert.Contains(t, errOut, "redis://ops:xxxxx@127.0.0.1:7401/abc", "the address is shown, redacted")
	assert.Empty(t, out)
	_ = os.Unsetenv("REDIS_ADDR")
}

// controlBytes matches any byte a terminal acts on.
var controlBytes = regexp.MustCompile("[\x00-\x08\x0b-\x1f\x7f]|\u202e")

// TestTerminalInjection: ids, field names and error texts that carry ESC,
// BEL, newlines or bidi overrides are printed escaped by every
// human-readable command, so that no line can be forged and no escape
// sequence reaches the terminal.
func TestTerminalInjection(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		evilOp := "op1\x1b[2J\x1b]0;pwned\x07"
		evilTask := "t\nFAKE 1796000000000-0 ok op=op-9 task=t-9  null"
		evilErr := "boom\x1b[31m\u202eRED\r\nFAKE line"
		_, err := completion.Publish(ctx, b.rdb, stream, completion.Message{OperationID: evilOp, TaskID: evilTask, Error: evilErr})
		require.NoError(t, err)
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data\x1b[2J", "x\x07y", "other\nFAKE", "v"}}).Err())
		handler := completion.HandlerFunc(func(context.Context, *completion.Completion) error {
			return completion.Permanent(fmt.Errorf("handler says %s", evilErr))
		})
		reg := &completion.MemoryRegistry{}
		require.NoError(t, reg.Register(completion.Task{TaskID: evilTask, SessionID: "s", ToolCallID: "tc", OperationID: evilOp}))
		runConsumerUntil(t, b.rdb, stream, reg, handler, 2)

		for _, cmd := range [][]string{{"info"}, {"pending"}, {"dead"}, {"tail", "-from", "0"}} {
			args := append([]string{"-addr", b.addr, "-stream", stream, "-group", "g"}, cmd...)
			var out, errOut string
			if cmd[0] == "tail" {
				out, errOut = tailFor(t, args...)
			} else {
				var code int
				out, errOut, code = cli(t, args...)
				require.Equal(t, exitOK, code, errOut)
			}
			assert.False(t, controlBytes.MatchString(out+errOut), "%v printed control characters:\n%q", cmd, out)
			for _, line := range strings.Split(out, "\n") {
				assert.False(t, strings.HasPrefix(line, "FAKE"), "%v: a forged line %q", cmd, line)
			}
			if cmd[0] == "dead" || cmd[0] == "tail" {
				assert.Contains(t, out, `op1\u001b[2J`, "%v shows the id, escaped", cmd)
			}
		}
	})
}

// TestEmptyStreamIsRefused: -stream ” must not mean the default stream.
func TestEmptyStreamIsRefused(t *testing.T) {
	_, errOut, code := cli(t, "-addr", "127.0.0.1:1", "-stream", "", "info")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "-stream is empty")
}

// TestPendingNamesTheGroups: pending for a group the stream does not have
// says which groups it has.
func TestPendingNamesTheGroups(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, stream, "orders-workers", "0").Err())
		_, errOut, code := cli(t, "-addr", b.addr, "-stream", stream, "pending")
		assert.Equal(t, exitError, code)
		assert.Contains(t, errOut, `"orders-workers"`)
		assert.Contains(t, errOut, "-group")
	})
}

// TestBareMillisecondIDs: three dead letters in one millisecond: a bare
// millisecond is refused, naming them; each full id moves exactly once.
func TestBareMillisecondIDs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		dead := completion.DeadLetterStreamFor(stream)
		for seq := range 3 {
			data := fmt.Sprintf(`{"operation_id":"op-%d","task_id":"t","success":true}`, seq)
			require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: dead, ID: fmt.Sprintf("1796157389285-%d", seq),
				Values: []any{"data", data, completion.DeadLetterReasonField, completion.ReasonTaskNotFound}}).Err())
		}
		for range 3 {
			_, errOut, code := cli(t, "-addr", b.addr, "-stream", stream, "redrive", "1796157389285")
			assert.Equal(t, exitError, code)
			assert.Contains(t, errOut, "1796157389285-0, 1796157389285-1, 1796157389285-2")
		}
		require.Zero(t, b.rdb.Exists(ctx, stream).Val(), "nothing was moved")
		for seq := range 3 {
			out, errOut, code := cli(t, "-addr", b.addr, "-stream", stream, "redrive", fmt.Sprintf("1796157389285-%d", seq))
			require.Equal(t, exitOK, code, errOut)
			assert.Contains(t, out, "Moved 1 dead letter")
			out, errOut, code = cli(t, "-addr", b.addr, "-stream", stream, "redrive", fmt.Sprintf("1796157389285-%d", seq))
			require.Equal(t, exitOK, code, errOut)
			assert.Contains(t, out, "Moved 0 dead letters")
		}
		assert.EqualValues(t, 3, b.rdb.XLen(ctx, stream).Val())
		assert.Zero(t, b.rdb.XLen(ctx, dead).Val())
	})
}

// TestDeadAndRedriveByReason: -reason filters the list and picks what
// redrive moves.
func TestDeadAndRedriveByReason(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := newScenario(t, b)
		out, errOut, code := cli(t, "-addr", b.addr, "-stream", s.stream, "dead", "-reason", completion.ReasonMalformed)
		require.Equal(t, exitOK, code, errOut)
		reasonRows := func(out, reason string) int {
			return len(regexp.MustCompile(`(?m)^\d+-\d+\s+\S+ \S+\s+`+reason+`\s`).FindAllString(out, -1))
		}
		assert.Equal(t, garbage, reasonRows(out, completion.ReasonMalformed))
		assert.Zero(t, reasonRows(out, completion.ReasonTaskNotFound))
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "redrive", "-reason", completion.ReasonTaskNotFound)
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, fmt.Sprintf("Moved %d dead letters", unknown))
		out, errOut, code = cli(t, "-addr", b.addr, "-stream", s.stream, "dead")
		require.Equal(t, exitOK, code, errOut)
		assert.Equal(t, garbage, reasonRows(out, completion.ReasonMalformed))
		assert.Zero(t, reasonRows(out, completion.ReasonTaskNotFound))
	})
}

// runConsumerUntil runs a consumer on stream until it has dead-lettered
// deadLetters entries.
func runConsumerUntil(t *testing.T, rdb *redis.Client, stream string, reg completion.TaskRegistry, h completion.CompletionHandler, deadLetters int64) {
	t.Helper()
	c, err := completion.NewConsumer(rdb, reg, h, completion.Config{
		Stream: stream, Group: "g", Consumer: "c1", Block: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	require.Eventually(t, func() bool { return c.Stats().DeadLettered == deadLetters }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

// tailFor runs "tail" with args until it has printed every entry the stream
// holds now, and returns its output.
func tailFor(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &out, &errOut) }()
	// Every entry is one line; two entries were written.
	require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") >= 2 }, 10*time.Second, 10*time.Millisecond, "tail printed: %q", out.String())
	cancel()
	<-done
	return out.String(), errOut.String()
}
