package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// xaddRecorder is an XAdder that records its arguments.
type xaddRecorder struct{ args []*redis.XAddArgs }

func (x *xaddRecorder) XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd {
	cp := *a
	if vs, ok := a.Values.([]any); ok {
		cp.Values = append([]any(nil), vs...)
		for i, v := range vs {
			if b, ok := v.([]byte); ok {
				cp.Values.([]any)[i] = string(b) // the buffer is reused
			}
		}
	}
	x.args = append(x.args, &cp)
	cmd := redis.NewStringCmd(ctx)
	cmd.SetVal("1-0")
	return cmd
}

func TestPublishRefusesInvalidMessages(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"no operation id", Message{TaskID: "t", Success: true}, "operation_id"},
		{"no task id", Message{OperationID: "op", Success: true}, "task_id"},
		{"number result", Message{OperationID: "op", TaskID: "t", Success: true, Result: json.RawMessage(`42`)}, "result"},
		{"array result", Message{OperationID: "op", TaskID: "t", Success: true, Result: json.RawMessage(`[1]`)}, "result"},
		{"invalid JSON result", Message{OperationID: "op", TaskID: "t", Success: true, Result: json.RawMessage(`{"a":`)}, "result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &xaddRecorder{}
			_, err := Publish(context.Background(), rec, "s", tt.msg)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tt.want)
			assert.Empty(t, rec.args, "nothing may be written for an invalid message")
		})
	}
}

func TestPublishArguments(t *testing.T) {
	msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
	tests := []struct {
		name       string
		stream     string
		opts       []PublishOption
		wantStream string
		wantMaxLen int64
	}{
		{"defaults", "s", nil, "s", DefaultMaxLen},
		{"custom max len", "s", []PublishOption{WithMaxLen(50)}, "s", 50},
		{"no trimming", "s", []PublishOption{WithMaxLen(0)}, "s", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &xaddRecorder{}
			id, err := Publish(context.Background(), rec, tt.stream, msg, tt.opts...)
			require.NoError(t, err)
			assert.Equal(t, "1-0", id)
			require.Len(t, rec.args, 1)
			a := rec.args[0]
			assert.Equal(t, tt.wantStream, a.Stream)
			assert.Equal(t, tt.wantMaxLen, a.MaxLen)
			assert.Equal(t, tt.wantMaxLen > 0, a.Approx, "trimming must be approximate (MAXLEN ~)")
			assert.Equal(t, []any{DataField, `{"operation_id":"op-1","task_id":"t-1","success":true,"result":null,"error":null}`}, a.Values)
		})
	}
	t.Run("negative max len", func(t *testing.T) {
		_, err := Publish(context.Background(), &xaddRecorder{}, "s", msg, WithMaxLen(-1))
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestPublishTrimsTheStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		for i := 0; i < 1000; i++ {
			_, err := Publish(ctx, b.rdb, stream, Message{OperationID: "op", TaskID: "t", Success: true}, WithMaxLen(100))
			require.NoError(t, err)
		}
		n, err := b.rdb.XLen(ctx, stream).Result()
		require.NoError(t, err)
		// MAXLEN ~ trims whole nodes on a real server, exactly on miniredis.
		assert.GreaterOrEqual(t, n, int64(100))
		assert.Less(t, n, int64(300))
	})
}

func TestPublishReturnsRedisErrors(t *testing.T) {
	rdb := newMini(t)
	require.NoError(t, rdb.Set(context.Background(), "str", "x", 0).Err())
	_, err := Publish(context.Background(), rdb, "str", Message{OperationID: "op", TaskID: "t", Success: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `stream "str"`)
	assert.False(t, errors.Is(err, ErrMalformed))
}

// pythonReader is a reader that knows only the Python service's format: it
// parses the JSON and applies the message model's rules, printing the
// fields it understood as JSON.
const pythonReader = `
import json, sys
d = json.loads(sys.stdin.buffer.read())
assert isinstance(d, dict)
op, task, ok = d["operation_id"], d.get("task_id", d.get("session_id")), d["success"]
assert isinstance(op, str) and isinstance(task, str) and isinstance(ok, bool)
r, e = d.get("result"), d.get("error")
assert r is None or isinstance(r, (dict, str))
assert e is None or isinstance(e, str)
print(json.dumps({"operation_id": op, "task_id": task, "success": ok, "result": r, "error": e}, ensure_ascii=False, separators=(",", ":")))
`

// pythonWriter writes a message the way the Python producer does
// (pydantic's model_dump_json: compact, fields in model order, nulls
// written, non-ASCII raw).
const pythonWriter = `
import json
m = {"operation_id": "op-py", "task_id": "t-py", "success": True,
     "result": {"z": 1, "a": {"ü": "<b>&</b>", "list": [1, 2.5, None]}}, "error": None}
print(json.dumps(m, ensure_ascii=False, separators=(",", ":")), end="")
`

func python(t *testing.T, script, stdin string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 not found; the Python interop tests need it (CI must provide it)")
		}
		t.Skip("python3 not found; the Python interop test needs it")
	}
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	require.NoError(t, err, "python: %s", out)
	return strings.TrimRight(string(out), "\n")
}

func TestPythonReaderDecodesWhatPublishWrites(t *testing.T) {
	rdb := newMini(t)
	ctx := context.Background()
	msgs := []Message{
		{OperationID: "op-1", TaskID: "t-1", Success: true},
		{OperationID: "op-2", TaskID: "t-2", Success: true, Result: StringResult("plain <text> & more")},
		{OperationID: "op-3", TaskID: "t-3", Success: true, Result: json.RawMessage(`{"z":1,"a":{"ü":"世界"}}`)},
		{OperationID: "op-4", TaskID: "t-4", Success: false, Error: "failed: \"quoted\"\nnext line"},
	}
	for _, m := range msgs {
		id, err := Publish(ctx, rdb, "s", m)
		require.NoError(t, err)
		entries, err := rdb.XRange(ctx, "s", id, id).Result()
		require.NoError(t, err)
		raw := entries[0].Values[DataField].(string)
		got := python(t, pythonReader, raw)
		// The Python reader re-encodes what it parsed the same way; the
		// bytes must be identical to what we wrote.
		assert.Equal(t, raw, got)
	}
}

func TestConsumerDecodesWhatPythonWrites(t *testing.T) {
	rdb := newMini(t)
	ctx := context.Background()
	raw := python(t, pythonWriter, "")
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", MaxLen: 10000, Approx: true, Values: map[string]any{"data": raw}}).Err())
	reg := &MemoryRegistry{}
	reg.Register(Task{TaskID: "t-py", SessionID: "s", ToolCallID: "tc", OperationID: "op-py"})
	h := newRecorder()
	c := newTestConsumer(t, rdb, reg, h, testConfig("s"))
	startConsumer(t, c)
	got := h.next(t)
	assert.Equal(t, "op-py", got.Message.OperationID)
	assert.Equal(t, "t-py", got.Task.TaskID)
	assert.True(t, got.Message.Success)
	assert.Equal(t, `{"z":1,"a":{"ü":"<b>&</b>","list":[1,2.5,null]}}`, string(got.Message.Result))
	// And what Publish writes for the same values is byte-identical.
	b, err := got.Message.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, raw, string(b))
}

func TestPublishThroughAPipeline(t *testing.T) {
	rdb := newMini(t)
	ctx := context.Background()
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, op := range []string{"op-1", "op-2", "op-3"} {
			if _, err := Publish(ctx, p, "s", Message{OperationID: op, TaskID: "t", Success: true}); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	entries, err := rdb.XRange(ctx, "s", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 3)
	for i, e := range entries {
		var m Message
		require.NoError(t, m.UnmarshalJSON([]byte(e.Values[DataField].(string))))
		assert.Equal(t, fmt.Sprintf("op-%d", i+1), m.OperationID, "each queued XADD must keep its own message")
	}
}

// TestPublishRefusesMistakes: an empty stream name and a nil client are
// refused before anything is written, not turned into the default stream
// or a crash.
func TestPublishRefusesMistakes(t *testing.T) {
	msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
	rec := &xaddRecorder{}
	_, err := Publish(context.Background(), rec, "", msg)
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "stream name is empty")
	assert.Empty(t, rec.args)

	_, err = Publish(context.Background(), nil, "s", msg)
	require.ErrorIs(t, err, ErrNilArgument)
	var nilClient *redis.Client
	_, err = Publish(context.Background(), nilClient, "s", msg)
	require.ErrorIs(t, err, ErrNilArgument, "a typed nil too")
}
