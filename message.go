package completion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DataField is the stream entry field that holds the JSON message ("data").
const DataField = "data"

// ErrMalformed is the error every decoding and validation failure wraps
// (test with errors.Is). The wrapping error names the field and the problem,
// for example:
//
//	completion: malformed message: field "success": want a boolean, got an array
var ErrMalformed = errors.New("completion: malformed message")

// maxDepth is the deepest nesting of objects and arrays accepted, counting the
// message object itself as level 1. orjson, which the Python reader uses,
// gives up at 1024 levels; anything deeper than this is rejected with an
// error instead of being scanned, and the scanner never recurses.
const maxDepth = 1000

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
// UTF-8, nested no deeper than the decoder accepts). The error wraps
// ErrMalformed and names the offending field.
func (m Message) Validate() error {
	_, err := m.validate()
	return err
}

// validate is Validate, also reporting whether Result holds insignificant
// whitespace.
func (m Message) validate() (resultHasSpace bool, err error) {
	if m.OperationID == "" {
		return false, fieldError(fieldNames[fOperationID], "must not be empty")
	}
	if m.TaskID == "" {
		return false, fieldError(fieldNames[fTaskID], "must not be empty")
	}
	return validateResult(m.Result)
}

// MarshalJSON returns the wire form of m, the same bytes as AppendJSON(nil).
// It makes a single allocation, sized to fit.
//
// json.Marshal(m) calls MarshalJSON but then escapes '<', '>', '&', U+2028
// and U+2029 again; to get the Python bytes call MarshalJSON or AppendJSON
// directly, or use a json.Encoder with SetEscapeHTML(false).
func (m Message) MarshalJSON() ([]byte, error) {
	compact, err := m.validate()
	if err != nil {
		return nil, err
	}
	return m.appendValid(make([]byte, 0, m.encodedLenMax()), compact), nil
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
	compact, err := m.validate()
	if err != nil {
		return dst, err
	}
	return m.appendValid(dst, compact), nil
}

// UnmarshalJSON decodes a wire message into m, accepting what the Python
// reader (orjson.loads plus pydantic v2 lax validation) accepts; see
// decodeMessage for the exact rules. Every error wraps ErrMalformed, and on
// error m is left unchanged. Result is a copy, so data may be reused after
// the call. Unlike the json.Unmarshaler convention, the literal null is not a
// no-op but an error: a message must be a JSON object.
func (m *Message) UnmarshalJSON(data []byte) error {
	var tmp Message
	if err := decodeMessage(data, &tmp); err != nil {
		return err
	}
	if tmp.Result != nil {
		tmp.Result = bytes.Clone(tmp.Result)
	}
	*m = tmp
	return nil
}

// StringResult returns s as a JSON string literal for Message.Result, escaped
// the way the Python side writes strings (see AppendJSON). Invalid UTF-8 in s
// is written as U+FFFD, one per invalid byte.
func StringResult(s string) json.RawMessage {
	return appendString(make([]byte, 0, quotedLen(s)), s)
}

// ObjectResult encodes v with encoding/json (HTML escaping off, compact) for
// Message.Result. v must encode as a JSON object, such as a non-nil map or a
// struct; anything else, including nil, and any encoding failure give an
// error wrapping ErrMalformed. Struct fields keep their declaration order,
// but encoding/json sorts map keys: to control key order use a struct, or
// set Result to pre-encoded bytes directly. U+2028 and U+2029, which
// encoding/json always escapes, are turned back into raw UTF-8 to match the
// Python side. Floats are formatted by encoding/json (1 rather than Python's
// 1.0), so their bytes may differ from what Python would write.
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

// ---------------------------------------------------------------------------
// Decoding

// Indexes of the keys the decoder looks at.
const (
	fOperationID = iota
	fTaskID
	fSessionID
	fSuccess
	fResult
	fError
	numFields
)

var fieldNames = [numFields]string{"operation_id", "task_id", "session_id", "success", "result", "error"}

// lookupField returns the index of the known key named by the decoded key k,
// or -1.
func lookupField(k []byte) int {
	switch string(k) {
	case "operation_id":
		return fOperationID
	case "task_id":
		return fTaskID
	case "session_id":
		return fSessionID
	case "success":
		return fSuccess
	case "result":
		return fResult
	case "error":
		return fError
	}
	return -1
}

// maxKeyRaw bounds the raw (possibly escaped) length of a key that can still
// decode to a known key: each decoded byte takes at most 6 raw bytes (\u00XX),
// and the longest known key has 12 bytes.
const maxKeyRaw = 6 * 12

// fieldValue records the last occurrence of a known key: where its value lies
// in the input and what kind of JSON value it is.
type fieldValue struct {
	set        bool
	kind       byte // first byte of the value: '{' '[' '"' 't' 'f' 'n', or '-'/digit
	start, end int  // the raw value, data[start:end]
	escaped    bool // a string value containing escape sequences
}

// content returns the bytes between the quotes of a string value.
func (v fieldValue) content(data []byte) []byte { return data[v.start+1 : v.end-1] }

// decodeMessage decodes the wire message in data into m, following what the
// Python reader (orjson.loads, then pydantic v2 in lax mode) accepts:
//
//   - data must be exactly one valid JSON value (whitespace around it allowed,
//     nothing else), valid UTF-8 throughout, nested at most maxDepth deep,
//     with \u escapes forming valid code points: a lone surrogate (\ud800
//     without a following low surrogate, or a stray low surrogate) is an
//     error, as in orjson.
//   - The value must be an object. Unknown keys are ignored (their values are
//     still checked to be valid JSON); when a key repeats, the last one wins.
//     Keys are compared after unescaping.
//   - operation_id: a non-empty string, required. (pydantic would accept
//     "", as it would for task_id; an empty id is useless here.)
//   - task_id: a non-empty string. When, and only when, the key is absent,
//     session_id is read instead, with the same rules. One of them is
//     required; a null or empty task_id is an error even if session_id is
//     present.
//   - success: required; true/false; the numbers 0 and 1, also written as
//     floats (0.0, -0, 1.0, 1e0, ...); or one of the strings 1, 0, and,
//     compared ASCII case-insensitively and untrimmed, true, false, yes, no,
//     on, off, t, f, y, n.
//   - result: an object, a string or null; absent means null. Result gets the
//     value's raw bytes exactly as they appear in data (a string stays a
//     quoted, possibly escaped, literal); null gives a nil Result.
//   - error: a string or null; absent means null. Error gets the unescaped
//     text ("" for null).
//
// Syntax errors are reported before type errors, as they are in Python. On
// error m is left unchanged; the error wraps ErrMalformed.
//
// Aliasing: on success m.Result is a sub-slice of data (no copy), with its
// capacity cut to its length so that appending to it copies. The caller must
// not modify or reuse data while m.Result is in use, or must copy it
// (UnmarshalJSON does). decodeMessage never writes to data, so data may view
// the bytes of a string (unsafe.StringData); m.Result then points into
// immutable memory and must be treated as read-only. The string fields never alias data: all of them
// share a single allocation, the only one decodeMessage makes on success
// (so keeping any one of them keeps all three alive).
func decodeMessage(data []byte, m *Message) error {
	return decode(data, "", m)
}

// decodeMessageString is decodeMessage on the bytes of src, which is
// immutable: ids and error text without escapes are returned as substrings
// of src, without copying, and Result points into src's memory (read-only).
// This is the consumer's hot path: go-redis hands entry fields over as
// strings.
func decodeMessageString(src string, m *Message) error {
	return decode(stringBytes(src), src, m)
}

// decode implements decodeMessage; src, when not empty, is data as an
// immutable string whose substrings may be returned.
func decode(data []byte, src string, m *Message) error {
	s := scanner{data: data}
	s.skipWS()
	if s.pos == len(data) {
		if len(data) == 0 {
			return fmt.Errorf("%w: empty input", ErrMalformed)
		}
		return fmt.Errorf("%w: input is only whitespace", ErrMalformed)
	}
	if data[s.pos] != '{' {
		kind := data[s.pos]
		if err := s.skipValue(); err != nil {
			return err
		}
		if err := s.end(); err != nil {
			return err
		}
		return fmt.Errorf("%w: want a JSON object at the top level, got %s", ErrMalformed, kindName(kind))
	}

	var fields [numFields]fieldValue
	if err := s.push(true); err != nil {
		return err
	}
	s.pos++
	s.skipWS()
	if s.pos < len(data) && data[s.pos] == '}' {
		s.pos++
		s.depth--
	} else {
		for {
			if s.pos >= len(data) {
				return s.errEOF()
			}
			if data[s.pos] != '"' {
				return s.errUnexpected("a string key")
			}
			keyStart := s.pos
			keyEscaped, err := s.scanString()
			if err != nil {
				return err
			}
			idx := -1
			if lit := data[keyStart+1 : s.pos-1]; !keyEscaped {
				idx = lookupField(lit)
			} else if len(lit) <= maxKeyRaw {
				var buf [maxKeyRaw]byte
				idx = lookupField(appendUnescaped(buf[:0], lit))
			}
			s.skipWS()
			if s.pos >= len(data) {
				return s.errEOF()
			}
			if data[s.pos] != ':' {
				return s.errUnexpected("':' after an object key")
			}
			s.pos++
			s.skipWS()
			if s.pos >= len(data) {
				return s.errEOF()
			}
			if idx >= 0 {
				s.field = fieldNames[idx]
			}
			v := fieldValue{set: true, kind: data[s.pos], start: s.pos}
			if v.kind == '"' {
				v.escaped, err = s.scanString()
			} else {
				err = s.skipValue()
			}
			if err != nil {
				return err
			}
			s.field = ""
			if idx >= 0 {
				v.end = s.pos
				fields[idx] = v
			}
			s.skipWS()
			if s.pos >= len(data) {
				return s.errEOF()
			}
			if c := data[s.pos]; c == ',' {
				s.pos++
				s.skipWS()
				continue
			} else if c == '}' {
				s.pos++
				s.depth--
				break
			}
			return s.errUnexpected("',' or '}' after an object member")
		}
	}
	if err := s.end(); err != nil {
		return err
	}
	return build(&fields, data, src, m)
}

// build checks the field values found in a syntactically valid message and,
// if they are acceptable, fills m. src is data as an immutable string, or
// empty.
func build(f *[numFields]fieldValue, data []byte, src string, m *Message) error {
	op := f[fOperationID]
	if err := checkID(op, fieldNames[fOperationID], data); err != nil {
		return err
	}
	taskName := fieldNames[fTaskID]
	task := f[fTaskID]
	if !task.set && f[fSessionID].set {
		taskName = fieldNames[fSessionID]
		task = f[fSessionID]
	}
	if !task.set {
		return fieldError(taskName, "required but missing (neither %q nor %q is present)", fieldNames[fTaskID], fieldNames[fSessionID])
	}
	if err := checkID(task, taskName, data); err != nil {
		return err
	}

	succ := f[fSuccess]
	if !succ.set {
		return fieldError(fieldNames[fSuccess], "required but missing")
	}
	success, err := boolValue(succ, data)
	if err != nil {
		return err
	}

	var result json.RawMessage
	switch res := f[fResult]; {
	case !res.set || res.kind == 'n':
	case res.kind == '{' || res.kind == '"':
		result = data[res.start:res.end:res.end]
	default:
		return fieldError(fieldNames[fResult], "want an object, a string or null, got %s", kindName(res.kind))
	}

	ev := f[fError]
	if ev.set && ev.kind != '"' && ev.kind != 'n' {
		return fieldError(fieldNames[fError], "want a string or null, got %s", kindName(ev.kind))
	}
	hasErr := ev.set && ev.kind == '"'

	if src != "" && !op.escaped && !task.escaped && (!hasErr || !ev.escaped) {
		// Nothing to unescape: substrings of the immutable source.
		*m = Message{
			OperationID: src[op.start+1 : op.end-1],
			TaskID:      src[task.start+1 : task.end-1],
			Success:     success,
			Result:      result,
		}
		if hasErr {
			m.Error = src[ev.start+1 : ev.end-1]
		}
		return nil
	}

	// All checks passed: materialise the strings in one allocation. A
	// decoded string is never longer than its escaped form.
	n := (op.end - op.start - 2) + (task.end - task.start - 2)
	if hasErr {
		n += ev.end - ev.start - 2
	}
	var b strings.Builder
	b.Grow(n)
	writeString(&b, op, data)
	opLen := b.Len()
	writeString(&b, task, data)
	taskEnd := b.Len()
	if hasErr {
		writeString(&b, ev, data)
	}
	all := b.String()

	*m = Message{
		OperationID: all[:opLen],
		TaskID:      all[opLen:taskEnd],
		Success:     success,
		Result:      result,
		Error:       all[taskEnd:],
	}
	return nil
}

// checkID checks that v, the value of the id field name, is a non-empty
// string.
func checkID(v fieldValue, name string, data []byte) error {
	switch {
	case !v.set:
		return fieldError(name, "required but missing")
	case v.kind != '"':
		return fieldError(name, "want a string, got %s", kindName(v.kind))
	case v.end-v.start == 2:
		return fieldError(name, "must not be empty")
	}
	return nil
}

// writeString writes the unescaped text of the string value v to b.
func writeString(b *strings.Builder, v fieldValue, data []byte) {
	lit := v.content(data)
	if !v.escaped {
		b.Write(lit)
		return
	}
	for {
		i := bytes.IndexByte(lit, '\\')
		if i < 0 {
			b.Write(lit)
			return
		}
		b.Write(lit[:i])
		r, n := decodeEscape(lit[i:])
		b.WriteRune(r)
		lit = lit[i+n:]
	}
}

// boolValue interprets the success value v the way pydantic's lax bool
// validator does.
func boolValue(v fieldValue, data []byte) (bool, error) {
	name := fieldNames[fSuccess]
	switch v.kind {
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case '"':
		lit := v.content(data)
		if v.escaped && len(lit) <= 6*5 { // "false" is the longest accepted word
			var buf [6 * 5]byte
			lit = appendUnescaped(buf[:0], lit)
		}
		if b, ok := stringAsBool(lit); ok {
			return b, nil
		}
		return false, fieldError(name, "want a boolean, got the string %s, which is not one of true/false, 1/0, yes/no, on/off, t/f, y/n", quoteForError(data[v.start:v.end]))
	case '{', '[', 'n':
		return false, fieldError(name, "want a boolean, got %s", kindName(v.kind))
	}
	raw := data[v.start:v.end]
	if b, ok := numberAsBool(raw); ok {
		return b, nil
	}
	return false, fieldError(name, "want a boolean, got the number %s (only 0 and 1 are accepted)", quoteForError(raw))
}

// stringAsBool mirrors pydantic-core's str_as_bool: exact "0"/"1", or one of
// the words compared ASCII case-insensitively, without trimming.
func stringAsBool(s []byte) (value, ok bool) {
	var lower [5]byte
	if len(s) > len(lower) {
		return false, false
	}
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower[:len(s)]) {
	case "1", "t", "y", "on", "yes", "true":
		return true, true
	case "0", "f", "n", "no", "off", "false":
		return false, true
	}
	return false, false
}

// numberAsBool mirrors pydantic's lax bool validation of a JSON number: an
// integer must be 0 or 1; a float must be exactly 0.0 or 1.0 (after
// rounding to float64, as Python parses it). raw is a valid JSON number.
func numberAsBool(raw []byte) (value, ok bool) {
	if bytes.IndexAny(raw, ".eE") < 0 {
		switch string(raw) {
		case "0", "-0":
			return false, true
		case "1":
			return true, true
		}
		return false, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return false, false // out of range: ±Inf, not an integer
	}
	switch f {
	case 0:
		return false, true
	case 1:
		return true, true
	}
	return false, false
}

// validateResult checks a Message.Result for Validate, and reports whether
// it contains insignificant whitespace.
func validateResult(r json.RawMessage) (hasSpace bool, err error) {
	if len(r) == 0 {
		return false, nil
	}
	// The result sits inside the message object, so it starts one level
	// down: anything Validate accepts, decodeMessage accepts back.
	s := scanner{data: r, depth: 1, field: fieldNames[fResult]}
	s.stack[0] = 1
	s.skipWS()
	if s.pos == len(r) {
		return false, fieldError(fieldNames[fResult], "invalid JSON: only whitespace")
	}
	kind := r[s.pos]
	if err := s.skipValue(); err != nil {
		return false, err
	}
	s.skipWS()
	if s.pos != len(r) {
		return false, fieldError(fieldNames[fResult], "invalid JSON at offset %d: more than one value", s.pos)
	}
	if kind != '{' && kind != '"' && kind != 'n' {
		return false, fieldError(fieldNames[fResult], "want an object, a string or null, got %s", kindName(kind))
	}
	return s.sawWS, nil
}

// ---------------------------------------------------------------------------
// Scanner

// scanner validates JSON text without recursion: the kind of each open
// container is one bit in stack.
type scanner struct {
	data  []byte
	pos   int
	depth int
	stack [(maxDepth + 63) / 64]uint64 // bit d set: level d+1 is an object
	field string                       // known field being scanned, for errors
	sawWS bool                         // skipWS skipped something
}

func (s *scanner) skipWS() {
	if s.pos < len(s.data) && s.data[s.pos] > ' ' {
		return // the common case: no whitespace
	}
	start := s.pos
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			s.sawWS = s.sawWS || s.pos != start
			return
		}
	}
	s.sawWS = s.sawWS || s.pos != start
}

// end checks that only whitespace follows the value just scanned.
func (s *scanner) end() error {
	s.skipWS()
	if s.pos != len(s.data) {
		return s.errorf("trailing data after the JSON value")
	}
	return nil
}

func (s *scanner) push(object bool) error {
	if s.depth >= maxDepth {
		return s.errorf("nested deeper than %d levels", maxDepth)
	}
	word, bit := s.depth>>6, uint(s.depth&63)
	if object {
		s.stack[word] |= 1 << bit
	} else {
		s.stack[word] &^= 1 << bit
	}
	s.depth++
	return nil
}

func (s *scanner) inObject() bool {
	d := s.depth - 1
	return s.stack[d>>6]>>uint(d&63)&1 == 1
}

// skipValue scans one JSON value, with leading whitespace, starting at s.pos.
func (s *scanner) skipValue() error {
	base := s.depth
	for {
		done, err := s.openValue()
		if err != nil {
			return err
		}
		if !done {
			continue // a container was opened; scan its first element
		}
		// A value is complete: close containers as far as possible and move
		// on to the next element.
		for {
			if s.depth == base {
				return nil
			}
			s.skipWS()
			if s.pos >= len(s.data) {
				return s.errEOF()
			}
			c := s.data[s.pos]
			if s.inObject() {
				if c == '}' {
					s.pos++
					s.depth--
					continue
				}
				if c != ',' {
					return s.errUnexpected("',' or '}' after an object member")
				}
				s.pos++
				if err := s.memberKey(); err != nil {
					return err
				}
			} else {
				if c == ']' {
					s.pos++
					s.depth--
					continue
				}
				if c != ',' {
					return s.errUnexpected("',' or ']' after an array element")
				}
				s.pos++
			}
			break
		}
	}
}

// openValue scans the start of a value. For a scalar or an empty container
// it consumes the whole value and reports done. For a non-empty container it
// consumes the opening bracket (and for an object the first key and its
// colon) and reports not done.
func (s *scanner) openValue() (done bool, err error) {
	s.skipWS()
	if s.pos >= len(s.data) {
		return false, s.errEOF()
	}
	switch c := s.data[s.pos]; c {
	case '{', '[':
		if err := s.push(c == '{'); err != nil {
			return false, err
		}
		s.pos++
		s.skipWS()
		if s.pos < len(s.data) && (s.data[s.pos] == '}' && c == '{' || s.data[s.pos] == ']' && c == '[') {
			s.pos++
			s.depth--
			return true, nil
		}
		if c == '{' {
			return false, s.memberKey()
		}
		return false, nil
	case '"':
		_, err := s.scanString()
		return true, err
	case 't':
		return true, s.literal("true")
	case 'f':
		return true, s.literal("false")
	case 'n':
		return true, s.literal("null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return true, s.scanNumber()
		}
		return false, s.errUnexpected("a JSON value")
	}
}

// memberKey scans an object key and the colon after it.
func (s *scanner) memberKey() error {
	s.skipWS()
	if s.pos >= len(s.data) {
		return s.errEOF()
	}
	if s.data[s.pos] != '"' {
		return s.errUnexpected("a string key")
	}
	if _, err := s.scanString(); err != nil {
		return err
	}
	s.skipWS()
	if s.pos >= len(s.data) {
		return s.errEOF()
	}
	if s.data[s.pos] != ':' {
		return s.errUnexpected("':' after an object key")
	}
	s.pos++
	return nil
}

func (s *scanner) literal(word string) error {
	rest := s.data[s.pos:]
	if len(rest) >= len(word) && string(rest[:len(word)]) == word {
		s.pos += len(word)
		return nil
	}
	if len(rest) < len(word) && string(rest) == word[:len(rest)] {
		return s.errEOFAt(len(s.data))
	}
	return s.errorf("invalid literal, want %s", word)
}

// scanNumber scans a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) scanNumber() error {
	d, i := s.data, s.pos
	if d[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		return i - j
	}
	switch {
	case i >= len(d):
		return s.errEOFAt(i)
	case d[i] == '0':
		i++
	case '1' <= d[i] && d[i] <= '9':
		digits()
	default:
		s.pos = i
		return s.errorf("invalid number: want a digit")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			if i >= len(d) {
				return s.errEOFAt(i)
			}
			s.pos = i
			return s.errorf("invalid number: want a digit after '.'")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			if i >= len(d) {
				return s.errEOFAt(i)
			}
			s.pos = i
			return s.errorf("invalid number: want a digit in the exponent")
		}
	}
	s.pos = i
	return nil
}

// scanString scans a string literal starting at the opening quote at s.pos,
// checking escapes, UTF-8 and surrogate pairs. It reports whether the string
// contains escape sequences.
func (s *scanner) scanString() (escaped bool, err error) {
	d := s.data
	i := s.pos + 1
	for {
		for i < len(d) && plainASCII[d[i]] {
			i++
		}
		if i >= len(d) {
			return escaped, s.errEOFAt(i)
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return escaped, nil
		case c == '\\':
			escaped = true
			n, err := s.checkEscape(i)
			if err != nil {
				return escaped, err
			}
			i += n
		case c < 0x20:
			s.pos = i
			return escaped, s.errorf("control character 0x%02x in a string (must be escaped)", c)
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				s.pos = i
				return escaped, s.errorf("invalid UTF-8 byte 0x%02x in a string", c)
			}
			i += size
		}
	}
}

// checkEscape checks the escape sequence at d[i] == '\\' and returns its
// length.
func (s *scanner) checkEscape(i int) (int, error) {
	d := s.data
	if i+1 >= len(d) {
		return 0, s.errEOFAt(len(d))
	}
	switch d[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
	default:
		s.pos = i
		return 0, s.errorf("invalid escape sequence \\%s", quoteByte(d[i+1]))
	}
	r, err := s.hexEscape(i)
	if err != nil {
		return 0, err
	}
	if !utf16.IsSurrogate(r) {
		return 6, nil
	}
	if r >= 0xdc00 {
		s.pos = i
		return 0, s.errorf("lone low surrogate \\u%04x in a string", r)
	}
	j := i + 6
	if j+1 < len(d) && d[j] == '\\' && d[j+1] == 'u' {
		r2, err := s.hexEscape(j)
		if err != nil {
			return 0, err
		}
		if 0xdc00 <= r2 && r2 <= 0xdfff {
			return 12, nil
		}
	} else if j >= len(d) || j+1 >= len(d) && d[j] == '\\' {
		return 0, s.errEOFAt(len(d))
	}
	s.pos = i
	return 0, s.errorf("lone high surrogate \\u%04x in a string", r)
}

// hexEscape decodes the four hex digits of the \u escape at d[i].
func (s *scanner) hexEscape(i int) (rune, error) {
	d := s.data
	var r rune
	for j := i + 2; j < i+6; j++ {
		if j >= len(d) {
			return 0, s.errEOFAt(len(d))
		}
		v := hexValue(d[j])
		if v < 0 {
			s.pos = j
			return 0, s.errorf("invalid hex digit %s in a \\u escape", quoteByte(d[j]))
		}
		r = r<<4 | v
	}
	return r, nil
}

func hexValue(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// decodeEscape decodes the escape sequence at the start of lit, which the
// scanner has already checked, and returns the rune and the sequence length.
func decodeEscape(lit []byte) (rune, int) {
	switch lit[1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hex4(lit[2:6])
		if utf16.IsSurrogate(r) {
			return utf16.DecodeRune(r, hex4(lit[8:12])), 12
		}
		return r, 6
	}
	return rune(lit[1]), 2 // '"', '\\', '/'
}

func hex4(b []byte) rune {
	return hexValue(b[0])<<12 | hexValue(b[1])<<8 | hexValue(b[2])<<4 | hexValue(b[3])
}

// appendUnescaped appends the unescaped text of the checked string content
// lit to dst.
func appendUnescaped(dst, lit []byte) []byte {
	for {
		i := bytes.IndexByte(lit, '\\')
		if i < 0 {
			return append(dst, lit...)
		}
		dst = append(dst, lit[:i]...)
		r, n := decodeEscape(lit[i:])
		dst = utf8.AppendRune(dst, r)
		lit = lit[i+n:]
	}
}

// ---------------------------------------------------------------------------
// Errors

func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%w: field %q: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}

// errorf reports a syntax error at s.pos, naming the field being scanned.
func (s *scanner) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s.field != "" {
		return fmt.Errorf("%w: field %q: invalid JSON at offset %d: %s", ErrMalformed, s.field, s.pos, msg)
	}
	return fmt.Errorf("%w: invalid JSON at offset %d: %s", ErrMalformed, s.pos, msg)
}

func (s *scanner) errEOF() error { return s.errEOFAt(len(s.data)) }

func (s *scanner) errEOFAt(pos int) error {
	s.pos = pos
	return s.errorf("unexpected end of input")
}

func (s *scanner) errUnexpected(want string) error {
	return s.errorf("unexpected %s, want %s", describeByte(s.data[s.pos]), want)
}

func describeByte(c byte) string {
	if 0x20 < c && c < 0x7f {
		return "character " + strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func quoteByte(c byte) string {
	if 0x20 < c && c < 0x7f {
		return string(rune(c))
	}
	return fmt.Sprintf("<0x%02x>", c)
}

// quoteForError returns raw input for an error message, shortened.
func quoteForError(raw []byte) string {
	const max = 40
	if len(raw) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(raw[cut]) {
			cut--
		}
		return string(raw[:cut]) + "..."
	}
	return string(raw)
}

func kindName(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// ---------------------------------------------------------------------------
// Encoding

const hexDigits = "0123456789abcdef"

// plainASCII[c] is true for the ASCII bytes that stand for themselves in a
// JSON string, both when reading and when writing: everything from 0x20 to
// 0x7f except '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// The parts of the wire form around the values.
const (
	wireOperationID = `{"operation_id":`
	wireTaskID      = `,"task_id":`
	wireSuccess     = `,"success":`
	wireResult      = `,"result":`
	wireError       = `,"error":`
	wireEnd         = `}`
)

// appendValid appends the wire form of m, which has passed Validate;
// compact tells whether Result needs whitespace removed.
func (m Message) appendValid(dst []byte, compact bool) []byte {
	dst = append(dst, wireOperationID...)
	dst = appendString(dst, m.OperationID)
	dst = append(dst, wireTaskID...)
	dst = appendString(dst, m.TaskID)
	dst = append(dst, wireSuccess...)
	if m.Success {
		dst = append(dst, "true"...)
	} else {
		dst = append(dst, "false"...)
	}
	dst = append(dst, wireResult...)
	if len(m.Result) == 0 {
		dst = append(dst, "null"...)
	} else if compact {
		dst = appendCompact(dst, m.Result)
	} else {
		dst = append(dst, m.Result...)
	}
	dst = append(dst, wireError...)
	if m.Error == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, m.Error)
	}
	return append(dst, wireEnd...)
}

// encodedLenMax returns an upper bound of the length of m's wire form (exact
// unless Result contains insignificant whitespace).
func (m Message) encodedLenMax() int {
	n := len(wireOperationID) + len(wireTaskID) + len(wireSuccess) + len(wireResult) + len(wireError) + len(wireEnd)
	n += quotedLen(m.OperationID) + quotedLen(m.TaskID)
	if m.Success {
		n += len("true")
	} else {
		n += len("false")
	}
	if len(m.Result) == 0 {
		n += len("null")
	} else {
		n += len(m.Result)
	}
	if m.Error == "" {
		n += len("null")
	} else {
		n += quotedLen(m.Error)
	}
	return n
}

// appendString appends s as a JSON string literal, escaped as serde_json
// (and so pydantic) escapes it; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainASCII[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// quotedLen returns len(appendString(nil, s)).
func quotedLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n++
			case c < 0x20:
				n += 5
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len("\uFFFD") - 1
		}
		i += size
	}
	return n
}

// appendCompact appends the valid JSON src without insignificant
// whitespace, keeping everything else (key order, escapes) as it is.
func appendCompact(dst, src []byte) []byte {
	start := 0
	inString := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// unescapeLineSeparators replaces the escapes \u2028 and \u2029 in the
// strings of the valid JSON b with the raw characters, in place.
func unescapeLineSeparators(b []byte) []byte {
	if !bytes.Contains(b, []byte(`\u202`)) {
		return b
	}
	out := b[:0]
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			out = append(out, c)
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+5 < len(b) && b[i+1] == 'u' && b[i+2] == '2' && b[i+3] == '0' && b[i+4] == '2' && (b[i+5] == '8' || b[i+5] == '9') {
				// The raw form (3 bytes) is shorter than the escape (6
				// bytes), so writing in place never overtakes reading.
				out = utf8.AppendRune(out, rune(0x2028+int(b[i+5]-'8')))
				i += 5
				continue
			}
			out = append(out, c, b[i+1])
			i++
			continue
		}
		out = append(out, c)
	}
	return out
}
