package completion

import (
	"bytes"
	"encoding/json"

	"github.com/streamrelay/completion/internal/wire"
)

// DataField is the stream entry field that holds the JSON message ("data").
const DataField = wire.DataField

// Message is an operation completion notification, the Go form of the Python
// pydantic model OperationCompleteMessage. Its JSON form is a compact object
// with the keys operation_id, task_id, success, result and error, in that
// order (see AppendJSON).
type Message struct {
	// OperationID identifies the operation that finished. Required, non-empty.
	OperationID string
	// TaskID identifies the task the operation belongs to. Required,
	// non-empty. It is read from "task_id", or from "session_id" when
	// "task_id" is absent, and always written as "task_id".
	TaskID string
	// Success reports whether the operation succeeded.
	Success bool
	// Result is the operation's result: the raw bytes of a JSON object, a
	// JSON string literal, or null. Nil or empty means null. It is kept raw
	// so that the key order of an object survives; StringResult and
	// ObjectResult build it.
	Result json.RawMessage
	// Error is the failure text. The empty string is written as null, so
	// "error":"" and "error":null read back the same.
	Error string
}

// Validate reports whether m can be written: both ids must be non-empty and
// Result must be empty or a single valid JSON object, string or null (valid
// UTF-8, nested no deeper than the decoder accepts, numbers within the range
// of a double). The error wraps ErrMalformed and names the offending field.
func (m Message) Validate() error {
	_, err := wire.Validate((*wire.Message)(&m))
	return err
}

// MarshalJSON returns the wire form of m, the same bytes as AppendJSON(nil).
// It makes a single allocation, sized to fit.
//
// json.Marshal(m) calls MarshalJSON but then escapes '<', '>', '&', U+2028
// and U+2029 again; to get the Python bytes call MarshalJSON or AppendJSON
// directly, or use a json.Encoder with SetEscapeHTML(false).
func (m Message) MarshalJSON() ([]byte, error) {
	w := (*wire.Message)(&m)
	compact, err := wire.Validate(w)
	if err != nil {
		return nil, err
	}
	return wire.Append(make([]byte, 0, wire.EncodedLenMax(w)), w, compact), nil
}

// AppendJSON validates m (see Validate) and appends its wire form to dst:
// byte for byte what pydantic v2 model_dump_json() writes for the same
// values, e.g.
//
//	{"operation_id":"op-1","task_id":"t-1","success":true,"result":null,"error":null}
//
// Strings escape only '"', '\\' and control characters (\b \f \n \r \t
// short, others as \u00XX with lowercase hex); '<', '>', '&', DEL, U+2028,
// U+2029 and all other non-ASCII text are written as raw UTF-8. Invalid UTF-8
// in OperationID, TaskID or Error is written as U+FFFD, one per invalid byte.
// Result is written compacted (insignificant whitespace removed, key order
// and escapes kept as given, not re-encoded); an empty Result and an empty
// Error are written as null. So a Result built by StringResult, or read from
// Python's own output, comes out exactly as Python writes it, while one read
// from other input keeps that input's escapes (such as \u00e9 or \/).
//
// On error dst is returned unchanged. AppendJSON does not allocate when dst
// has enough spare capacity.
func (m Message) AppendJSON(dst []byte) ([]byte, error) {
	w := (*wire.Message)(&m)
	compact, err := wire.Validate(w)
	if err != nil {
		return dst, err
	}
	return wire.Append(dst, w, compact), nil
}

// UnmarshalJSON decodes a wire message into m, accepting what the Python
// reader (orjson.loads plus pydantic v2 lax validation) accepts:
//
//   - exactly one JSON object, valid UTF-8, nested at most 1000 levels deep,
//     numbers within the range of a double, no lone surrogate escapes;
//     unknown keys are ignored, and of a repeated key the last one wins;
//   - operation_id: a non-empty string;
//   - task_id, or session_id when task_id is absent: a non-empty string;
//   - success: true/false, the numbers 0 and 1 (also as 0.0, 1e0, ...), or
//     the strings 1, 0, true, false, yes, no, on, off, t, f, y, n (ASCII
//     case-insensitive);
//   - result: an object, a string or null (absent means null), kept raw;
//   - error: a string or null (absent means null).
//
// Every error wraps ErrMalformed and names the field, and on error m is left
// unchanged. Result is a copy, so data may be reused after the call. Unlike
// the json.Unmarshaler convention, the literal null is not a no-op but an
// error: a message must be a JSON object.
func (m *Message) UnmarshalJSON(data []byte) error {
	var tmp wire.Message
	if err := wire.Decode(data, &tmp); err != nil {
		return err
	}
	if tmp.Result != nil {
		tmp.Result = bytes.Clone(tmp.Result)
	}
	*m = Message(tmp)
	return nil
}

// StringResult returns s as a JSON string literal for Message.Result, escaped
// the way the Python side writes strings (see AppendJSON). Invalid UTF-8 in s
// is written as U+FFFD, one per invalid byte.
func StringResult(s string) json.RawMessage { return wire.StringResult(s) }

// ObjectResult encodes v with encoding/json (HTML escaping off, compact) for
// Message.Result. v must encode as a JSON object, such as a non-nil map or a
// struct; anything else, including nil, and any encoding failure give an
// error wrapping ErrMalformed. Struct fields keep their declaration order,
// but encoding/json sorts map keys: to control key order use a struct, or
// set Result to pre-encoded bytes directly. U+2028 and U+2029, which
// encoding/json always escapes, are turned back into raw UTF-8 to match the
// Python side. Floats are formatted by encoding/json (1 rather than Python's
// 1.0), so their bytes may differ from what Python would write.
func ObjectResult(v any) (json.RawMessage, error) { return wire.ObjectResult(v) }
