package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

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

// The methods of completion.Message, for the tests moved here with the
// decoder: the root package's Message converts to this one.
func (m Message) MarshalJSON() ([]byte, error) {
	compact, err := Validate(&m)
	if err != nil {
		return nil, err
	}
	return Append(make([]byte, 0, EncodedLenMax(&m)), &m, compact), nil
}

func (m Message) AppendJSON(dst []byte) ([]byte, error) {
	compact, err := Validate(&m)
	if err != nil {
		return dst, err
	}
	return Append(dst, &m, compact), nil
}

func (m *Message) UnmarshalJSON(data []byte) error {
	var tmp Message
	if err := Decode(data, &tmp); err != nil {
		return err
	}
	if tmp.Result != nil {
		tmp.Result = bytes.Clone(tmp.Result)
	}
	*m = tmp
	return nil
}
func TestAppendStringMatchesEncodingJSONForASCII(t *testing.T) {
	// Go's encoding/json (without HTML escaping) escapes ASCII exactly as
	// serde_json does: \b \f \n \r \t short, other controls as lowercase
	// \u00XX, DEL raw.
	for c := 0; c < utf8.RuneSelf; c++ {
		s := "a" + string(rune(c)) + "b"
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(s))
		want := strings.TrimSuffix(buf.String(), "\n")
		assert.Equal(t, want, string(AppendString(nil, s)), "byte 0x%02x", c)
		assert.Equal(t, len(want), QuotedLen(s), "byte 0x%02x", c)
	}
}
func TestEncodeInvalidUTF8(t *testing.T) {
	msg := Message{OperationID: "op\xff", TaskID: "t\xc3", Error: "a\xed\xa0\x80b"}
	out, err := msg.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, `{"operation_id":"op`+"\uFFFD"+`","task_id":"t`+"\uFFFD"+
		`","success":false,"result":null,"error":"a`+"\uFFFD\uFFFD\uFFFD"+`b"}`, string(out))
	assert.True(t, utf8.Valid(out))

	var back Message
	require.NoError(t, Decode(out, &back))
	assert.Equal(t, "op\uFFFD", back.OperationID)
	assert.Equal(t, "a\uFFFD\uFFFD\uFFFDb", back.Error)

	assert.Equal(t, `"x`+"\uFFFD"+`y"`, string(StringResult("x\x80y")))
}

// successValue wraps a raw JSON value as the success field of an otherwise
// valid message.
func successValue(raw string) string {
	return `{"operation_id":"o","task_id":"t","success":` + raw + `}`
}
func TestDecodeSuccessVariants(t *testing.T) {
	accept := map[string]bool{
		`true`: true, `false`: false,
		`1`: true, `0`: false, `-0`: false,
		`1.0`: true, `0.0`: false, `-0.0`: false, `1e0`: true, `1E+0`: true, `10e-1`: true,
		`0e5`: false, `1.000`: true, `1e-400`: false, `0.99999999999999999999`: true,
		`"true"`: true, `"TRUE"`: true, `"True"`: true, `"tRuE"`: true,
		`"false"`: false, `"FALSE"`: false, `"False"`: false,
		`"1"`: true, `"0"`: false,
		`"yes"`: true, `"YES"`: true, `"no"`: false, `"No"`: false,
		`"on"`: true, `"ON"`: true, `"off"`: false, `"OFF"`: false,
		`"t"`: true, `"T"`: true, `"f"`: false, `"F"`: false,
		`"y"`: true, `"Y"`: true, `"n"`: false, `"N"`: false,
		`"\u0074rue"`: true, `"\u004E\u006f"`: false,
	}
	for raw, want := range accept {
		t.Run(raw, func(t *testing.T) {
			var m Message
			require.NoError(t, Decode([]byte(successValue(raw)), &m))
			assert.Equal(t, want, m.Success)
		})
	}

	reject := map[string]string{
		`2`:           "got the number 2",
		`-1`:          "got the number -1",
		`0.5`:         "got the number 0.5",
		`1.0000001`:   "got the number",
		`1e400`:       "number 1e400 is out of the range of a double",
		`10`:          "got the number 10",
		`"2"`:         `got the string "2"`,
		`" true"`:     `got the string " true"`,
		`"true "`:     `got the string "true "`,
		`"tru"`:       `got the string "tru"`,
		`""`:          `got the string ""`,
		`"yeſ"`:       `got the string`, // no Unicode case folding
		`"ye\u017f"`:  `got the string`,
		`"yes\u0000"`: "got the string",
		`"truefalse"`: "got the string",
		`"-1"`:        "got the string",
		`"1.0"`:       "got the string",
		`null`:        "want a boolean, got null",
		`[]`:          "want a boolean, got an array",
		`[true]`:      "want a boolean, got an array",
		`{}`:          "want a boolean, got an object",
	}
	for raw, want := range reject {
		t.Run("reject "+raw, func(t *testing.T) {
			var m Message
			err := Decode([]byte(successValue(raw)), &m)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), `field "success": `)
			assert.Contains(t, err.Error(), want)
			assert.Equal(t, Message{}, m, "m untouched on error")
		})
	}
}

type decodeCase struct {
	name  string
	input string
	want  Message
	err   string // non-empty: want an error containing this
}

var decodeCases = []decodeCase{
	{
		name:  "a number that overflows a double, in the result",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":{"n":1e400}}`,
		err:   "number 1e400 is out of the range of a double",
	},
	{
		name:  "a negative one, under an unknown key",
		input: `{"operation_id":"o","task_id":"t","success":true,"x":[-2E+999]}`,
		err:   "out of the range of a double",
	},
	{
		name:  "an integer of 100,000 digits",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":{"n":1` + strings.Repeat("0", 100_000) + `}}`,
		err:   "out of the range of a double",
	},
	{
		name:  "the largest double and an underflow are accepted",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":{"a":1.7976931348623157e308,"b":1e-400,"c":` + strings.Repeat("9", 308) + `}}`,
		want: Message{OperationID: "o", TaskID: "t", Success: true,
			Result: json.RawMessage(`{"a":1.7976931348623157e308,"b":1e-400,"c":` + strings.Repeat("9", 308) + `}`)},
	},
	{
		name:  "minimal",
		input: `{"operation_id":"o","task_id":"t","success":true}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "whitespace everywhere, raw result kept",
		input: " \n{ \"operation_id\" : \"o\" ,\t\"task_id\":\"t\", \"success\" : false , \"result\" : { \"a\" : [ 1 , 2 ] } , \"error\" : null } \r\n\t",
		want:  Message{OperationID: "o", TaskID: "t", Result: json.RawMessage(`{ "a" : [ 1 , 2 ] }`)},
	},
	{
		name:  "unknown keys with nesting are skipped",
		input: `{"x":{"y":[1,{"z":null}],"w":"\u00e9"},"operation_id":"o","task_id":"t","success":1,"extra":[[],{},[{}]],"n":-1.5e+3,"b":false,"s":"\"}"}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "session_id when task_id is absent",
		input: `{"operation_id":"o","session_id":"s","success":true}`,
		want:  Message{OperationID: "o", TaskID: "s", Success: true},
	},
	{
		name:  "task_id wins over an earlier session_id",
		input: `{"operation_id":"o","session_id":"s","task_id":"t","success":true}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "task_id wins over a later session_id",
		input: `{"operation_id":"o","task_id":"t","session_id":"s","success":true}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "session_id of any type is ignored when task_id is present",
		input: `{"operation_id":"o","task_id":"t","session_id":[5],"success":true}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "duplicate keys: last wins",
		input: `{"operation_id":"a","operation_id":"b","task_id":null,"task_id":"t","success":"maybe","success":true,"result":[1],"result":"ok","error":5,"error":"e"}`,
		want:  Message{OperationID: "b", TaskID: "t", Success: true, Result: json.RawMessage(`"ok"`), Error: "e"},
	},
	{
		name:  "duplicate keys: a bad last value fails",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":{},"result":3}`,
		err:   `field "result": want an object, a string or null, got a number`,
	},
	{
		name:  "escaped keys are matched after unescaping",
		input: `{"operation\u005fid":"o","\u0074\u0061\u0073\u006b\u005f\u0069\u0064":"t","succes\u0073":true,"\u0072esult":"r"}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true, Result: json.RawMessage(`"r"`)},
	},
	{
		name:  "long escaped unknown key",
		input: `{"\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061\u0061":1,"operation_id":"o","task_id":"t","success":true}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "escapes in strings are decoded",
		input: `{"operation_id":"o\/1","task_id":"t\u00e9","success":false,"error":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83c\udf89\u0000\uFFFF"}`,
		want:  Message{OperationID: "o/1", TaskID: "té", Error: "a\"b\\c/d\b\f\n\r\té🎉\x00\uffff"},
	},
	{
		name:  "string result keeps its raw escaped bytes",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":"x\u00e9\/\n"}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true, Result: json.RawMessage(`"x\u00e9\/\n"`)},
	},
	{
		name:  "null result",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":null}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true},
	},
	{
		name:  "empty error string",
		input: `{"operation_id":"o","task_id":"t","success":false,"error":""}`,
		want:  Message{OperationID: "o", TaskID: "t"},
	},
	{
		name:  "raw non-ASCII, DEL and line separators",
		input: "{\"operation_id\":\"é世🎉\",\"task_id\":\"t\x7f\u2028\",\"success\":true}",
		want:  Message{OperationID: "é世🎉", TaskID: "t\x7f\u2028", Success: true},
	},
	{
		name:  "result nested to the depth limit",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":` + nestedObjects(MaxDepth-1) + `}`,
		want:  Message{OperationID: "o", TaskID: "t", Success: true, Result: json.RawMessage(nestedObjects(MaxDepth - 1))},
	},

	// Not a JSON object.
	{name: "empty input", input: ``, err: "malformed message: empty input"},
	{name: "only whitespace", input: " \n\t", err: "only whitespace"},
	{name: "array", input: `[]`, err: "want a JSON object at the top level, got an array"},
	{name: "null", input: `null`, err: "want a JSON object at the top level, got null"},
	{name: "string", input: `"x"`, err: "want a JSON object at the top level, got a string"},
	{name: "number", input: `12`, err: "want a JSON object at the top level, got a number"},
	{name: "bool", input: `true`, err: "want a JSON object at the top level, got a boolean"},
	{name: "invalid top-level value", input: `[1,]`, err: "invalid JSON at offset 3: unexpected character ']'"},

	// Missing, empty, null and mistyped fields.
	{name: "missing operation_id", input: `{"task_id":"t","success":true}`, err: `field "operation_id": required but missing`},
	{name: "empty operation_id", input: `{"operation_id":"","task_id":"t","success":true}`, err: `field "operation_id": must not be empty`},
	{name: "null operation_id", input: `{"operation_id":null,"task_id":"t","success":true}`, err: `field "operation_id": want a string, got null`},
	{name: "number operation_id", input: `{"operation_id":5,"task_id":"t","success":true}`, err: `field "operation_id": want a string, got a number`},
	{name: "object operation_id", input: `{"operation_id":{},"task_id":"t","success":true}`, err: `field "operation_id": want a string, got an object`},
	{name: "bool task_id", input: `{"operation_id":"o","task_id":true,"success":true}`, err: `field "task_id": want a string, got a boolean`},
	{name: "missing task_id and session_id", input: `{"operation_id":"o","success":true}`, err: `field "task_id": required but missing (neither "task_id" nor "session_id" is present)`},
	{name: "empty task_id", input: `{"operation_id":"o","task_id":"","success":true}`, err: `field "task_id": must not be empty`},
	{name: "null task_id with session_id", input: `{"operation_id":"o","task_id":null,"session_id":"s","success":true}`, err: `field "task_id": want a string, got null`},
	{name: "empty task_id with session_id", input: `{"operation_id":"o","task_id":"","session_id":"s","success":true}`, err: `field "task_id": must not be empty`},
	{name: "null session_id", input: `{"operation_id":"o","session_id":null,"success":true}`, err: `field "session_id": want a string, got null`},
	{name: "empty session_id", input: `{"operation_id":"o","session_id":"","success":true}`, err: `field "session_id": must not be empty`},
	{name: "array session_id", input: `{"operation_id":"o","session_id":["s"],"success":true}`, err: `field "session_id": want a string, got an array`},
	{name: "missing success", input: `{"operation_id":"o","task_id":"t"}`, err: `field "success": required but missing`},
	{name: "array success", input: `{"operation_id":"o","task_id":"t","success":[]}`, err: `field "success": want a boolean, got an array`},
	{name: "number result", input: `{"operation_id":"o","task_id":"t","success":true,"result":1}`, err: `field "result": want an object, a string or null, got a number`},
	{name: "array result", input: `{"operation_id":"o","task_id":"t","success":true,"result":[{}]}`, err: `field "result": want an object, a string or null, got an array`},
	{name: "bool result", input: `{"operation_id":"o","task_id":"t","success":true,"result":false}`, err: `field "result": want an object, a string or null, got a boolean`},
	{name: "number error", input: `{"operation_id":"o","task_id":"t","success":false,"error":500}`, err: `field "error": want a string or null, got a number`},
	{name: "object error", input: `{"operation_id":"o","task_id":"t","success":false,"error":{"m":"x"}}`, err: `field "error": want a string or null, got an object`},
	{name: "bool error", input: `{"operation_id":"o","task_id":"t","success":false,"error":true}`, err: `field "error": want a string or null, got a boolean`},
	{name: "field errors in model order", input: `{"error":1,"result":1,"success":2,"task_id":3,"operation_id":4}`, err: `field "operation_id": want a string, got a number`},

	// Syntax: whole input must be valid JSON.
	{name: "trailing garbage", input: `{"operation_id":"o","task_id":"t","success":true}x`, err: "offset 49: trailing data after the JSON value"},
	{name: "trailing second object", input: `{"operation_id":"o","task_id":"t","success":true} {}`, err: "trailing data"},
	{name: "trailing comma after object", input: `{"operation_id":"o","task_id":"t","success":true},`, err: "trailing data"},
	{name: "syntax error beats field errors", input: `{"operation_id":5,"x":tru}`, err: "invalid JSON at offset 22: invalid literal, want true"},
	{name: "trailing comma in object", input: `{"operation_id":"o","task_id":"t","success":true,}`, err: "unexpected character '}', want a string key"},
	{name: "trailing comma in array", input: `{"x":[1,],"operation_id":"o"}`, err: "offset 8: unexpected character ']', want a JSON value"},
	{name: "missing colon", input: `{"operation_id" "o"}`, err: "want ':' after an object key"},
	{name: "missing comma", input: `{"operation_id":"o" "task_id":"t"}`, err: "want ',' or '}' after an object member"},
	{name: "missing comma in array", input: `{"x":[1 2]}`, err: "want ',' or ']' after an array element"},
	{name: "non-string key", input: `{1:2}`, err: "want a string key"},
	{name: "single quotes", input: `{'operation_id':'o'}`, err: "unexpected character '\\''"},
	{name: "byte order mark", input: "\xef\xbb\xbf{}", err: "unexpected byte 0xef"},
	{name: "leading zero", input: `{"x":01}`, err: "want ',' or '}'"},
	{name: "bare minus", input: `{"x":-}`, err: "invalid number: want a digit"},
	{name: "fraction without digits", input: `{"x":1.}`, err: "want a digit after '.'"},
	{name: "exponent without digits", input: `{"x":1e+}`, err: "want a digit in the exponent"},
	{name: "leading dot", input: `{"x":.5}`, err: "want a JSON value"},
	{name: "plus sign", input: `{"x":+1}`, err: "want a JSON value"},
	{name: "NaN", input: `{"x":NaN}`, err: "want a JSON value"},
	{name: "Infinity", input: `{"x":Infinity}`, err: "want a JSON value"},
	{name: "hex number", input: `{"x":0x10}`, err: "want ',' or '}'"},
	{name: "capitalised literal", input: `{"x":True}`, err: "want a JSON value"},
	{name: "bad literal", input: `{"x":nul}`, err: "invalid literal, want null"},
	{name: "raw control character", input: "{\"x\":\"a\nb\"}", err: "control character 0x0a in a string"},
	{name: "raw tab in a field", input: "{\"error\":\"a\tb\"}", err: `field "error": invalid JSON at offset 11: control character 0x09`},
	{name: "invalid escape", input: `{"x":"\x41"}`, err: `invalid escape sequence \x`},
	{name: "invalid hex digit", input: `{"x":"\u12G4"}`, err: `invalid hex digit G`},

	// UTF-8 and surrogates.
	{name: "invalid UTF-8 in a field", input: "{\"error\":\"\xff\"}", err: `field "error": invalid JSON at offset 10: invalid UTF-8 byte 0xff`},
	{name: "invalid UTF-8 in an unknown value", input: "{\"x\":\"ab\xc3\"}", err: "invalid UTF-8 byte 0xc3"},
	{name: "invalid UTF-8 in a key", input: "{\"\xfe\":1}", err: "invalid UTF-8 byte 0xfe"},
	{name: "overlong encoding", input: "{\"x\":\"\xc0\xaf\"}", err: "invalid UTF-8"},
	{name: "UTF-8 encoded surrogate", input: "{\"x\":\"\xed\xa0\x80\"}", err: "invalid UTF-8"},
	{name: "invalid UTF-8 outside strings", input: "{\"x\":1\xff}", err: "unexpected byte 0xff"},
	{name: "lone high surrogate", input: `{"error":"\ud800"}`, err: `field "error": invalid JSON at offset 10: lone high surrogate \ud800`},
	{name: "lone low surrogate", input: `{"x":"\udc00"}`, err: `lone low surrogate \udc00`},
	{name: "high surrogate then BMP escape", input: `{"x":"\ud800\u0041"}`, err: `lone high surrogate \ud800`},
	{name: "high surrogate then text", input: `{"x":"\ud800x"}`, err: `lone high surrogate`},
	{name: "reversed surrogate pair", input: `{"x":"\udc00\ud800"}`, err: `lone low surrogate`},
	{name: "two high surrogates", input: `{"x":"\ud800\ud800\udc00"}`, err: `lone high surrogate`},
	{name: "lone surrogate in a key", input: `{"\udfff":1}`, err: `lone low surrogate`},

	// Truncation.
	{name: "truncated after brace", input: `{`, err: "offset 1: unexpected end of input"},
	{name: "truncated in key", input: `{"operation_`, err: "unexpected end of input"},
	{name: "truncated in value", input: `{"operation_id":"o`, err: `field "operation_id": invalid JSON at offset 18: unexpected end of input`},
	{name: "truncated in escape", input: `{"x":"\u00`, err: "unexpected end of input"},
	{name: "truncated after high surrogate", input: `{"x":"\ud83c`, err: "unexpected end of input"},
	{name: "truncated after high surrogate backslash", input: `{"x":"\ud83c\`, err: "unexpected end of input"},
	{name: "truncated in literal", input: `{"x":tr`, err: "unexpected end of input"},
	{name: "truncated in number", input: `{"x":1.`, err: "unexpected end of input"},
	{name: "truncated in nested", input: `{"x":[{"a":[`, err: "unexpected end of input"},

	// Depth.
	{
		name:  "result nested beyond the depth limit",
		input: `{"operation_id":"o","task_id":"t","success":true,"result":` + nestedObjects(MaxDepth) + `}`,
		err:   `field "result": invalid JSON at offset`,
	},
	{name: "hostile array nesting", input: `{"x":` + strings.Repeat("[", 1<<20), err: "nested deeper than 1000 levels"},
	{name: "hostile top-level nesting", input: strings.Repeat("[", 1<<20), err: "nested deeper than 1000 levels"},
}

// nestedObjects returns depth nested objects: {"a":{"a":...{}...}}.
func nestedObjects(depth int) string {
	if depth == 0 {
		return "null"
	}
	return strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
}
func TestDecodeMessage(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			err := Decode([]byte(tc.input), &m)
			var viaUnmarshal Message
			uerr := viaUnmarshal.UnmarshalJSON([]byte(tc.input))
			if tc.err != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrMalformed)
				assert.True(t, strings.HasPrefix(err.Error(), "completion: malformed message: "), err.Error())
				assert.Contains(t, err.Error(), tc.err)
				assert.Equal(t, Message{}, m, "m untouched on error")
				assert.Equal(t, err, uerr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, m)
			require.NoError(t, uerr)
			assert.Equal(t, tc.want, viaUnmarshal)
		})
	}
}
func TestDecodeEveryTruncation(t *testing.T) {
	full := `{"operation_id":"op-é","task_id":"t\ud83c\udf89","success":"yes","result":{"a":[1,-2.5e+3,true,null,"x\"y"]},"error":"e\n"}`
	var m Message
	require.NoError(t, Decode([]byte(full), &m))
	for i := 0; i < len(full); i++ {
		err := Decode([]byte(full[:i]), &m)
		require.Error(t, err, "prefix %q", full[:i])
		assert.ErrorIs(t, err, ErrMalformed)
	}
}
func TestDecodeMessageAliasing(t *testing.T) {
	data := []byte(`{"operation_id":"o","task_id":"t","success":true,"result":{"k":"v"},"error":"e"}`)

	var fast Message
	require.NoError(t, Decode(data, &fast))
	var safe Message
	require.NoError(t, safe.UnmarshalJSON(data))

	// The string fields never alias data; Result does for Decode only.
	for i := range data {
		data[i] = ' '
	}
	assert.Equal(t, "o", fast.OperationID)
	assert.Equal(t, "t", fast.TaskID)
	assert.Equal(t, "e", fast.Error)
	assert.Equal(t, strings.Repeat(" ", len(`{"k":"v"}`)), string(fast.Result))
	assert.Equal(t, `{"k":"v"}`, string(safe.Result))

	// The Result of Decode has no spare capacity, so appending to it
	// cannot overwrite data.
	assert.Equal(t, len(fast.Result), cap(fast.Result))
}
func TestDecodeMessageFromStringMemory(t *testing.T) {
	// The consumer decodes straight from the string go-redis returns. A
	// string constant lives in read-only memory: any write by Decode
	// would crash here.
	const wire = `{"operation_id":"o","task_id":"t\u00e9","success":"yes","result":{"k":"v"},"error":"e\n"}`
	data := unsafe.Slice(unsafe.StringData(wire), len(wire))
	var m Message
	require.NoError(t, Decode(data, &m))
	assert.Equal(t, Message{OperationID: "o", TaskID: "té", Success: true, Result: json.RawMessage(`{"k":"v"}`), Error: "e\n"}, m)
	for _, bad := range decodeCases {
		if bad.input == "" {
			continue
		}
		_ = Decode(unsafe.Slice(unsafe.StringData(bad.input), len(bad.input)), &m)
	}
}

// refDecode is an independent reading of the wire rules, built on
// encoding/json. judged is false for inputs where encoding/json cannot serve
// as an oracle: it replaces lone surrogates with U+FFFD instead of failing,
// and nests 10000 levels deep rather than MaxDepth.
func refDecode(data []byte) (m Message, err error, judged bool) {
	if bytes.Count(data, []byte("{"))+bytes.Count(data, []byte("[")) >= MaxDepth || hasSurrogateEscape(data) {
		return Message{}, nil, false
	}
	reject := errors.New("rejected")
	// encoding/json replaces invalid UTF-8 instead of failing; orjson fails.
	if !utf8.Valid(data) || !json.Valid(data) {
		return Message{}, reject, true
	}
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); trimmed[0] != '{' {
		return Message{}, reject, true
	}
	if hasInfiniteNumber(data) { // orjson: "number is infinity when parsed as double"
		return Message{}, reject, true
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return Message{}, err, true
	}
	str := func(raw json.RawMessage) (string, bool) {
		var s string
		if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}

	raw, ok := obj["operation_id"]
	if !ok {
		return Message{}, reject, true
	}
	if m.OperationID, ok = str(raw); !ok || m.OperationID == "" {
		return Message{}, reject, true
	}
	raw, ok = obj["task_id"]
	if !ok {
		raw, ok = obj["session_id"]
	}
	if !ok {
		return Message{}, reject, true
	}
	if m.TaskID, ok = str(raw); !ok || m.TaskID == "" {
		return Message{}, reject, true
	}

	raw, ok = obj["success"]
	if !ok {
		return Message{}, reject, true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return Message{}, err, true
	}
	switch v := v.(type) {
	case bool:
		m.Success = v
	case json.Number:
		s := string(v)
		if strings.ContainsAny(s, ".eE") {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || (f != 0 && f != 1) {
				return Message{}, reject, true
			}
			m.Success = f == 1
		} else {
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil || (i != 0 && i != 1) {
				return Message{}, reject, true
			}
			m.Success = i == 1
		}
	case string:
		lower := []byte(v)
		for i, c := range lower {
			if 'A' <= c && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
			}
		}
		switch string(lower) {
		case "1", "true", "yes", "on", "t", "y":
			m.Success = true
		case "0", "false", "no", "off", "f", "n":
			m.Success = false
		default:
			return Message{}, reject, true
		}
	default:
		return Message{}, reject, true
	}

	if raw, ok = obj["result"]; ok && string(raw) != "null" {
		if raw[0] != '{' && raw[0] != '"' {
			return Message{}, reject, true
		}
		m.Result = raw
	}
	if raw, ok = obj["error"]; ok && string(raw) != "null" {
		if m.Error, ok = str(raw); !ok {
			return Message{}, reject, true
		}
	}
	return m, nil, true
}

// hasSurrogateEscape reports whether data may hold a \u escape of a UTF-16
// surrogate.
// hasInfiniteNumber reports whether the valid JSON data holds a number that
// overflows a double.
func hasInfiniteNumber(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if n, ok := tok.(json.Number); ok {
			if f, _ := strconv.ParseFloat(string(n), 64); math.IsInf(f, 0) {
				return true
			}
		}
	}
}

func hasSurrogateEscape(data []byte) bool {
	for i := 0; i+3 < len(data); i++ {
		if data[i] == '\\' && data[i+1] == 'u' && (data[i+2] == 'd' || data[i+2] == 'D') {
			switch data[i+3] {
			case '8', '9', 'a', 'b', 'c', 'd', 'e', 'f', 'A', 'B', 'C', 'D', 'E', 'F':
				return true
			}
		}
	}
	return false
}

// checkAgainstReference compares Decode with refDecode on data.
func checkAgainstReference(t *testing.T, data []byte) {
	t.Helper()
	var m Message
	err := Decode(data, &m)
	ref, refErr, judged := refDecode(data)
	if !judged {
		return
	}
	if refErr != nil {
		require.Error(t, err, "reference rejects %q (%v), Decode accepts", data, refErr)
		return
	}
	require.NoError(t, err, "reference accepts %q", data)
	require.Equal(t, ref, m, "input %q", data)
}
func TestDecodeMatchesReference(t *testing.T) {
	inputs := []string{
		`{"operation_id":"o","task_id":"t","success":true,"result":{"b":1,"a":[true,{"c":null}]},"error":"\u00e9\n"}`,
		`{"operation_id":"o","task_id":"t","success":"Off","result":"\u0041\/","error":null}`,
		`{"operation_id":"o","task_id":"t","success":1e0}`,
		`{"operation_id":"o","task_id":"t","success":-0.0e-5}`,
		`{"operation_id":"o","task_id":"t","success":1e-400}`,
		`{"operation_id":"o","task_id":"t","success":99999999999999999999999}`,
		`{"operation_id":"o","task_id":"t","success":"ye\u017f"}`,
		`{"operation_id":"o","task_id":"t","success":"\u0059"}`,
		`{"operation_id":"o","session_id":"s","success":"1"}`,
		`{"operation_id":"o","task_id":"t","session_id":"s","success":"0"}`,
		`{"operation_id":"o","task_id":"","session_id":"s","success":"0"}`,
		`{"operation_id":"o","task_id":null,"session_id":"s","success":"0"}`,
		`{"operation_id":"o","task_id":"t","success":true,"result":"","error":""}`,
		`{"operation_id":"o","task_id":"t","success":true,"result":5}`,
		`{"operation_id":"o","task_id":"t","success":true,"error":[]}`,
		`{"operation_id":"o","operation_id":"p","task_id":"t","success":true}`,
		`{"operation\u005fid":"o","task_id":"t","success":true}`,
		`{"Operation_id":"o","task_id":"t","success":true}`,
		`{"operation_id":"o","task_id":"t","success":true}garbage`,
		"{\"operation_id\":\"o\",\"task_id\":\"t\",\"success\":true,\"x\":\"\xff\"}",
		"{\"operation_id\":\"o\x7f\",\"task_id\":\"t\u2028\",\"success\":true}",
		"\t{\"operation_id\" :\"o\" , \"task_id\":\"t\",\"success\":true,\"result\": {\n} }\n",
		`[{"operation_id":"o","task_id":"t","success":true}]`,
		`null`,
		``,
		`{}`,
		`{"operation_id":"o","task_id":"t","success":"true","result":{"a":01}}`,
	}
	for _, g := range goldenCases(t) {
		inputs = append(inputs, g.golden)
	}
	for _, tc := range decodeCases {
		inputs = append(inputs, tc.input)
	}
	for _, in := range inputs {
		checkAgainstReference(t, []byte(in))
	}
}
func TestRefDecodeJudgesSurrogatesOut(t *testing.T) {
	// The reference cannot see lone surrogates, which is why such inputs are
	// judged by TestDecodeMessage instead.
	_, _, judged := refDecode([]byte(`{"x":"\ud800"}`))
	assert.False(t, judged)
	_, _, judged = refDecode([]byte(`{"x":"\u00e9"}`))
	assert.True(t, judged)
}

// compactResult returns r compacted, with empty and null both as "null".
func compactResult(t testing.TB, r json.RawMessage) string {
	t.Helper()
	if len(r) == 0 {
		return "null"
	}
	var buf bytes.Buffer
	require.NoError(t, json.Compact(&buf, r))
	return buf.String()
}

var benchMessage = Message{
	OperationID: "op-7f3c2a9e-1b4d-4c8a-9e2f-5a6b7c8d9e0f",
	TaskID:      "task-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
	Success:     true,
	Result:      json.RawMessage(`{"status":"completed","agent_id":"agent-42","output":{"items":[1,2,3],"note":"héllo <world> & more"},"tokens":1234}`),
}

func BenchmarkMessageDecode(b *testing.B) {
	data, err := benchMessage.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		var m Message
		for b.Loop() {
			if err := Decode(data, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UnmarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		var m Message
		for b.Loop() {
			if err := m.UnmarshalJSON(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json_baseline", func(b *testing.B) {
		// For comparison only: a plain struct decoded by encoding/json.
		type plain struct {
			OperationID string          `json:"operation_id"`
			TaskID      string          `json:"task_id"`
			Success     bool            `json:"success"`
			Result      json.RawMessage `json:"result"`
			Error       *string         `json:"error"`
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		var p plain
		for b.Loop() {
			if err := json.Unmarshal(data, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
