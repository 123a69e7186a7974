// Package wire reads and writes the completion message, the JSON in a
// stream entry's "data" field: byte for byte what the Python service's
// pydantic model writes, and accepting what its reader (orjson, then
// pydantic in lax mode) accepts. The decoder is hand-written, allocates
// once per message and never recurses; the tests compare it with a
// reference built on encoding/json, also by fuzzing.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unsafe"
)

// DataField is the stream entry field that holds the JSON message ("data").
const DataField = "data"

// ErrMalformed is the error every decoding and validation failure wraps.
// The root package exports it as completion.ErrMalformed.
var ErrMalformed = errors.New("completion: malformed message")

// MaxDepth is the deepest nesting of objects and arrays accepted, counting
// the message object itself as level 1. orjson, which the Python reader
// uses, gives up at 1024 levels; anything deeper than this is rejected with
// an error instead of being scanned.
const MaxDepth = 1000

// Message is the decoded message. Its fields are those of
// completion.Message, which converts to and from it.
type Message struct {
	OperationID string
	TaskID      string
	Success     bool
	Result      json.RawMessage
	Error       string
}

// Validate reports whether m can be written: both ids non-empty, Result
// empty or one valid JSON object, string or null. It also reports whether
// Result holds insignificant whitespace, which Append then removes.
func Validate(m *Message) (resultHasSpace bool, err error) {
	if m.OperationID == "" {
		return false, fieldError(fieldNames[fOperationID], "must not be empty")
	}
	if m.TaskID == "" {
		return false, fieldError(fieldNames[fTaskID], "must not be empty")
	}
	return validateResult(m.Result)
}

// StringResult returns s as a JSON string literal, escaped the way the
// Python side writes strings. Invalid UTF-8 is written as U+FFFD, one per
// invalid byte.
func StringResult(s string) json.RawMessage {
	return AppendString(make([]byte, 0, QuotedLen(s)), s)
}

// ObjectResult encodes v with encoding/json (HTML escaping off, compact); v
// must encode as a JSON object. U+2028 and U+2029 are turned back into raw
// UTF-8, as the Python side writes them.
func ObjectResult(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: field %q: %w", ErrMalformed, fieldNames[fResult], err)
	}
	out := bytes.TrimRight(buf.Bytes(), "\n")
	if len(out) == 0 || out[0] != '{' {
		kind := "nothing"
		if len(out) > 0 {
			kind = kindName(out[0])
		}
		return nil, fieldError(fieldNames[fResult], "want a value that encodes as a JSON object, got %s", kind)
	}
	return unescapeLineSeparators(out), nil
}

// stringBytes returns the bytes of s without copying. The bytes must not be
// modified.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
