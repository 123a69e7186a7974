package completion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzValidUTF8 replaces each byte of s that is not part of valid UTF-8 with
// U+FFFD, as the encoder does (like encoding/json).
func fuzzValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// FuzzPublishValidate publishes messages with arbitrary fields through a
// recording XAdder: Publish either refuses the message with an error
// wrapping ErrMalformed and writes nothing (exactly when Validate refuses
// it), or writes one XADD whose data field decodes back to the message
// (ids and error text with invalid UTF-8 replaced by U+FFFD, Result equal
// after json.Compact), in the bytes AppendJSON produces. The caller's
// Result is never modified.
//
// Seeds live in testdata/fuzz/FuzzPublishValidate as well as below.
func FuzzPublishValidate(f *testing.F) {
	seeds := []struct {
		op, task string
		success  bool
		result   string
		errText  string
	}{
		{"op-1", "t-1", true, "", ""},
		{"op-1", "t-1", false, `null`, "boom"},
		{"", "t-1", true, "", ""},
		{"op-1", "", true, "", ""},
		{"op-1", "t-1", true, `42`, ""},
		{"op-1", "t-1", true, `{"a":`, ""},
		{"op-1", "t-1", true, " {\n\t\"b\" : [1, 2.5e3, true, null],\r\n \"a\" : \"<&>\\u2028\" } ", ""},
		{"op-1", "t-1", true, `"\ud83c\udf89 \u00e9"`, "line\nbreak \"quoted\" \u2028"},
		{"\xff\xfeop", "t\x00-1", true, "\"\xff\"", "\xed\xa0\x80"},
		{"op-1", "t-1", true, strings.Repeat("[", 1001) + strings.Repeat("]", 1001), ""},
		{"op-1", "t-1", true, `{"a":1} {"b":2}`, ""},
		{"op-1", "t-1", true, `{"a":"\ud800"}`, ""},
	}
	for _, s := range seeds {
		f.Add(s.op, s.task, s.success, []byte(s.result), s.errText)
	}
	f.Fuzz(func(t *testing.T, op, task string, success bool, result []byte, errText string) {
		msg := Message{OperationID: op, TaskID: task, Success: success, Error: errText}
		if len(result) > 0 {
			msg.Result = json.RawMessage(result)
		}
		before := bytes.Clone(result)
		rec := &xaddRecorder{}
		id, err := Publish(context.Background(), rec, "s", msg)
		if !bytes.Equal(before, result) {
			t.Fatalf("Publish modified the caller's Result: %q, was %q", result, before)
		}
		verr := msg.Validate()
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			if verr == nil {
				t.Fatalf("Publish refused a message Validate accepts: %v", err)
			}
			if len(rec.args) != 0 || id != "" {
				t.Fatalf("refused message was written: %d XADDs, id %q", len(rec.args), id)
			}
			return
		}
		if verr != nil {
			t.Fatalf("Publish wrote a message Validate refuses: %v", verr)
		}
		if id != "1-0" || len(rec.args) != 1 {
			t.Fatalf("id %q, %d XADDs; want %q, 1", id, len(rec.args), "1-0")
		}
		a := rec.args[0]
		vals, ok := a.Values.([]any)
		if a.Stream != "s" || !ok || len(vals) != 2 || vals[0] != DataField {
			t.Fatalf("XADD to %q with values %#v", a.Stream, a.Values)
		}
		data, ok := vals[1].(string)
		if !ok {
			t.Fatalf("data value is a %T", vals[1])
		}
		wire, err := msg.AppendJSON(nil)
		if err != nil || string(wire) != data {
			t.Fatalf("published %q, AppendJSON gives %q (%v)", data, wire, err)
		}
		var back Message
		if err := decodeMessage([]byte(data), &back); err != nil {
			t.Fatalf("published data %q does not decode: %v", data, err)
		}
		want := Message{OperationID: fuzzValidUTF8(op), TaskID: fuzzValidUTF8(task), Success: success, Result: msg.Result, Error: fuzzValidUTF8(errText)}
		if !equalMessages(want, back) {
			t.Fatalf("published %+v, read back %+v\n wire %q", want, back, data)
		}
	})
}
