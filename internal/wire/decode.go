package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

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

// Decode decodes the wire message in data into m, following what the
// Python reader (orjson.loads, then pydantic v2 in lax mode) accepts:
//
//   - data must be exactly one valid JSON value (whitespace around it allowed,
//     nothing else), valid UTF-8 throughout, nested at most MaxDepth deep,
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
// (UnmarshalJSON does). Decode never writes to data, so data may view
// the bytes of a string (unsafe.StringData); m.Result then points into
// immutable memory and must be treated as read-only. The string fields never alias data: all of them
// share a single allocation, the only one Decode makes on success
// (so keeping any one of them keeps all three alive).
func Decode(data []byte, m *Message) error {
	return decode(data, "", m)
}

// DecodeString is Decode on the bytes of src, which is
// immutable: ids and error text without escapes are returned as substrings
// of src, without copying, and Result points into src's memory (read-only).
// This is the consumer's hot path: go-redis hands entry fields over as
// strings.
func DecodeString(src string, m *Message) error {
	return decode(stringBytes(src), src, m)
}

// decode implements Decode; src, when not empty, is data as an
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
	if err := s.object(&fields); err != nil {
		return err
	}
	if err := s.end(); err != nil {
		return err
	}
	return build(&fields, data, src, m)
}

// object scans the message object at s.pos, recording in fields where the
// value of each known key lies.
func (s *scanner) object(fields *[numFields]fieldValue) error {
	if err := s.push(true); err != nil {
		return err
	}
	s.pos++
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if err := s.member(fields); err != nil {
			return err
		}
		s.skipWS()
		if s.pos >= len(s.data) {
			return s.errEOF()
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipWS()
			continue
		case '}':
			s.pos++
			s.depth--
			return nil
		}
		return s.errUnexpected("',' or '}' after an object member")
	}
}

// member scans one "key": value member of the message object.
func (s *scanner) member(fields *[numFields]fieldValue) error {
	data := s.data
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
	return nil
}

// build checks the field values found in a syntactically valid message and,
// if they are acceptable, fills m. src is data as an immutable string, or
// empty.
func build(f *[numFields]fieldValue, data []byte, src string, m *Message) error {
	op := f[fOperationID]
	if err := checkID(op, fieldNames[fOperationID], data); err != nil {
		return err
	}
	task, err := taskField(f, data)
	if err != nil {
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
	*m = Message{Success: success, Result: result}
	if src != "" && !op.escaped && !task.escaped && (!hasErr || !ev.escaped) {
		// Nothing to unescape: substrings of the immutable source.
		m.OperationID, m.TaskID = src[op.start+1:op.end-1], src[task.start+1:task.end-1]
		if hasErr {
			m.Error = src[ev.start+1 : ev.end-1]
		}
		return nil
	}
	if !hasErr {
		ev = fieldValue{}
	}
	m.OperationID, m.TaskID, m.Error = unescape3(data, op, task, ev)
	return nil
}

// taskField returns the value of task_id, or of session_id when task_id is
// absent, checked.
func taskField(f *[numFields]fieldValue, data []byte) (fieldValue, error) {
	name, task := fieldNames[fTaskID], f[fTaskID]
	if !task.set && f[fSessionID].set {
		name, task = fieldNames[fSessionID], f[fSessionID]
	}
	if !task.set {
		return task, fieldError(name, "required but missing (neither %q nor %q is present)", fieldNames[fTaskID], fieldNames[fSessionID])
	}
	return task, checkID(task, name, data)
}

// unescape3 materialises three string values (c unset: "") in one
// allocation. A decoded string is never longer than its escaped form.
func unescape3(data []byte, a, b, c fieldValue) (string, string, string) {
	n := (a.end - a.start - 2) + (b.end - b.start - 2)
	if c.set {
		n += c.end - c.start - 2
	}
	var sb strings.Builder
	sb.Grow(n)
	writeString(&sb, a, data)
	aLen := sb.Len()
	writeString(&sb, b, data)
	bEnd := sb.Len()
	if c.set {
		writeString(&sb, c, data)
	}
	all := sb.String()
	return all[:aLen], all[aLen:bEnd], all[bEnd:]
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
	// down: anything Validate accepts, Decode accepts back.
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
