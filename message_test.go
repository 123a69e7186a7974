package completion

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/streamrelay/completion/internal/wire"
	"github.com/streamrelay/completion/internal/wire/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goldenCases returns messages with the exact bytes the Python side writes
// for them (internal/wire/wiretest).
func goldenCases(t testing.TB) []goldenCase {
	t.Helper()
	cases, err := wiretest.GoldenCases()
	require.NoError(t, err)
	out := make([]goldenCase, len(cases))
	for i, c := range cases {
		out[i] = goldenCase{name: c.Name, golden: c.Bytes, msg: Message(c.Msg)}
	}
	return out
}

// goldenCase is a message and the bytes it encodes to.
type goldenCase struct {
	name   string
	msg    Message
	golden string
}

func TestMessageGolden(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.msg.MarshalJSON()
			require.NoError(t, err)
			assert.Equal(t, tc.golden, string(out))

			prefix := []byte("prefix:")
			out, err = tc.msg.AppendJSON(prefix)
			require.NoError(t, err)
			assert.Equal(t, "prefix:"+tc.golden, string(out))

			var got Message
			require.NoError(t, decodeMessage([]byte(tc.golden), &got))
			assert.Equal(t, tc.msg, got)

			var viaUnmarshal Message
			require.NoError(t, json.Unmarshal([]byte(tc.golden), &viaUnmarshal))
			assert.Equal(t, tc.msg, viaUnmarshal)
		})
	}
}
func TestMarshalThroughEncodingJSON(t *testing.T) {
	// encoding/json calls MarshalJSON but then re-escapes '<', '>', '&',
	// U+2028 and U+2029 unless the encoder has SetEscapeHTML(false). Callers
	// that need the Python bytes use MarshalJSON or AppendJSON directly.
	msg := Message{OperationID: "<op>", TaskID: "t", Error: "a & b\u2028"}
	direct, err := msg.MarshalJSON()
	require.NoError(t, err)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(msg))
	assert.Equal(t, string(direct)+"\n", buf.String())

	viaMarshal, err := json.Marshal(msg)
	require.NoError(t, err)
	assert.NotEqual(t, string(direct), string(viaMarshal))
	assert.Contains(t, string(viaMarshal), `\u003cop\u003e`)
}
func TestStringResult(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		// python3: json.dumps("héllo <b>\"x\"</b>\n\x0b\x7f\u2029", ensure_ascii=False)
		{"héllo <b>\"x\"</b>\n\x0b\x7f\u2029", `"héllo <b>\"x\"</b>\n\u000b` + "\x7f\u2029" + `"`},
		{"🎉 & <>", `"🎉 & <>"`},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			got := StringResult(tc.in)
			assert.Equal(t, tc.want, string(got))
			var s string
			require.NoError(t, json.Unmarshal(got, &s))
			assert.Equal(t, tc.in, s)
		})
	}
}
func TestObjectResult(t *testing.T) {
	type inner struct {
		Y []int `json:"y"`
		B *int  `json:"b"`
	}
	type payload struct {
		Z    int            `json:"z"`
		A    inner          `json:"a"`
		HTML string         `json:"html"`
		Sep  string         `json:"sep"`
		Map  map[string]int `json:"map"`
	}
	got, err := ObjectResult(payload{
		Z: 1, A: inner{Y: []int{1, 2}}, HTML: "<b>&</b>", Sep: "a\u2028b\u2029\\u2028",
		Map: map[string]int{"b": 2, "a": 1},
	})
	require.NoError(t, err)
	assert.Equal(t, `{"z":1,"a":{"y":[1,2],"b":null},"html":"<b>&</b>","sep":"a`+"\u2028b\u2029"+`\\u2028","map":{"a":1,"b":2}}`, string(got))

	got, err = ObjectResult(map[string]any{"k": "v"})
	require.NoError(t, err)
	assert.Equal(t, `{"k":"v"}`, string(got))

	got, err = ObjectResult(json.RawMessage(`{ "z" : 1, "a" : 2 }`))
	require.NoError(t, err)
	assert.Equal(t, `{"z":1,"a":2}`, string(got))

	rejects := []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, "got null"},
		{"nil map", map[string]int(nil), "got null"},
		{"string", "text", "got a string"},
		{"slice", []int{1}, "got an array"},
		{"number", 3, "got a number"},
		{"bool", true, "got a boolean"},
		{"unsupported type", map[string]any{"c": make(chan int)}, "unsupported type"},
	}
	for _, tc := range rejects {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ObjectResult(tc.v)
			require.Error(t, err)
			assert.Nil(t, got)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), `field "result"`)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
func TestValidate(t *testing.T) {
	ok := Message{OperationID: "o", TaskID: "t"}
	with := func(result string) Message {
		m := ok
		m.Result = json.RawMessage(result)
		return m
	}
	tests := []struct {
		name string
		msg  Message
		want string // "" = valid; else a substring of the error
	}{
		{"minimal", ok, ""},
		{"zero message", Message{}, `field "operation_id": must not be empty`},
		{"empty task", Message{OperationID: "o"}, `field "task_id": must not be empty`},
		{"empty object", with(`{}`), ""},
		{"empty string", with(`""`), ""},
		{"null", with(`null`), ""},
		{"padded object", with(" {\n\t\"a\" : [ 1 , 2 ] } \r\n"), ""},
		{"number", with(`5`), `field "result": want an object, a string or null, got a number`},
		{"array", with(`[1]`), `field "result": want an object, a string or null, got an array`},
		{"bool", with(`true`), `field "result": want an object, a string or null, got a boolean`},
		{"whitespace only", with("  "), `field "result": invalid JSON`},
		{"truncated object", with(`{"a":`), `field "result": invalid JSON at offset 5: unexpected end of input`},
		{"unterminated string", with(`"abc`), `field "result": invalid JSON`},
		{"two values", with(`{} {}`), `field "result": invalid JSON at offset 3: more than one value`},
		{"invalid UTF-8", with("\"\xff\""), `field "result": invalid JSON at offset 1: invalid UTF-8`},
		{"lone surrogate", with(`"\ud800"`), `lone high surrogate`},
		{"nesting at the limit", with(nestedObjects(wire.MaxDepth - 1)), ""},
		{"nesting over the limit", with(nestedObjects(wire.MaxDepth)), "nested deeper than 1000 levels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.msg.Validate()
			prefix := []byte("keep")
			out, appendErr := tc.msg.AppendJSON(prefix)
			marshaled, marshalErr := tc.msg.MarshalJSON()
			if tc.want == "" {
				require.NoError(t, err)
				require.NoError(t, appendErr)
				require.NoError(t, marshalErr)
				// Whatever Validate accepts, the decoder reads back.
				var back Message
				require.NoError(t, decodeMessage(marshaled, &back))
				assert.Equal(t, tc.msg.OperationID, back.OperationID)
				assert.Equal(t, compactResult(t, tc.msg.Result), compactResult(t, back.Result))
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, err, appendErr)
			assert.Equal(t, "keep", string(out), "dst is returned unchanged on error")
			assert.Equal(t, err, marshalErr)
			assert.Nil(t, marshaled)
		})
	}
}
func TestAppendJSONCompactsResult(t *testing.T) {
	msg := Message{OperationID: "o", TaskID: "t", Success: true,
		Result: json.RawMessage(" { \"a b\" : [ 1 ,\n 2 ] , \"s\" : \" x \\\" y \\u00e9 \" }\t")}
	out, err := msg.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, `{"operation_id":"o","task_id":"t","success":true,"result":{"a b":[1,2],"s":" x \" y \u00e9 "},"error":null}`, string(out))

	msg.Result = json.RawMessage(" null ")
	out, err = msg.MarshalJSON()
	require.NoError(t, err)
	assert.Contains(t, string(out), `"result":null,`)
}

// nestedObjects returns depth nested objects: {"a":{"a":...{}...}}.
func nestedObjects(depth int) string {
	if depth == 0 {
		return "null"
	}
	return strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
}
func TestUnmarshalJSONNestedInStruct(t *testing.T) {
	var env struct {
		Msg  Message  `json:"msg"`
		Opt  *Message `json:"opt"`
		List []Message
	}
	in := `{"msg":{"operation_id":"o","session_id":"s","success":"on","result":"r"},"opt":null,"List":[{"operation_id":"a","task_id":"b","success":0}]}`
	require.NoError(t, json.Unmarshal([]byte(in), &env))
	assert.Equal(t, Message{OperationID: "o", TaskID: "s", Success: true, Result: json.RawMessage(`"r"`)}, env.Msg)
	assert.Nil(t, env.Opt)
	assert.Equal(t, []Message{{OperationID: "a", TaskID: "b"}}, env.List)

	err := json.Unmarshal([]byte(`{"msg":null}`), &env)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrMalformed)

	err = json.Unmarshal([]byte(`{"msg":{"operation_id":"o"}}`), &env)
	assert.ErrorIs(t, err, ErrMalformed)
}

var benchMessage = Message{
	OperationID: "op-7f3c2a9e-1b4d-4c8a-9e2f-5a6b7c8d9e0f",
	TaskID:      "task-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
	Success:     true,
	Result:      json.RawMessage(`{"status":"completed","agent_id":"agent-42","output":{"items":[1,2,3],"note":"héllo <world> & more"},"tokens":1234}`),
}

func BenchmarkMessageMarshal(b *testing.B) {
	b.Run("MarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := benchMessage.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			var err error
			if buf, err = benchMessage.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
func TestAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked in full runs")
	}
	data, err := benchMessage.MarshalJSON()
	require.NoError(t, err)
	buf := make([]byte, 0, 1024)
	var m Message

	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = benchMessage.MarshalJSON() }), "MarshalJSON")
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { buf, _ = benchMessage.AppendJSON(buf[:0]) }), "AppendJSON")
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = decodeMessage(data, &m) }), "decodeMessage")
	assert.Equal(t, 2.0, testing.AllocsPerRun(100, func() { _ = m.UnmarshalJSON(data) }), "UnmarshalJSON")

	// Escapes needing more room than the raw text still fit the single
	// MarshalJSON allocation.
	escaped := Message{OperationID: "o\x01\x02\x03", TaskID: "t\"\\\n", Error: "\xff\xfe\x00", Result: json.RawMessage(` { "a" : 1 } `)}
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = escaped.MarshalJSON() }), "MarshalJSON with escapes")
	escapedData, err := escaped.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = decodeMessage(escapedData, &m) }), "decodeMessage with escapes")
}

// compactResult returns a Result compacted, with empty and null both as
// null, for comparing results that differ only in whitespace.
func compactResult(t testing.TB, r json.RawMessage) string {
	t.Helper()
	if len(r) == 0 {
		return "null"
	}
	var buf bytes.Buffer
	require.NoError(t, json.Compact(&buf, r))
	return buf.String()
}

// equalMessages compares messages with Result compared after compaction.
func equalMessages(a, b Message) bool {
	ca, cb := a.Result, b.Result
	var ba, bb bytes.Buffer
	if json.Compact(&ba, ca) == nil {
		ca = ba.Bytes()
	}
	if json.Compact(&bb, cb) == nil {
		cb = bb.Bytes()
	}
	if len(ca) == 0 {
		ca = []byte("null")
	}
	if len(cb) == 0 {
		cb = []byte("null")
	}
	return a.OperationID == b.OperationID && a.TaskID == b.TaskID && a.Success == b.Success &&
		a.Error == b.Error && bytes.Equal(ca, cb)
}
