package completion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// fuzzEntryID is the id of the entries FuzzEntry builds.
const fuzzEntryID = "1700000000000-7"

// fuzzRuns returns runs with the library's default limits and with tiny
// ones, so that every limit is reached by short inputs. Their client is
// never contacted: decoding an entry does not talk to Redis.
func fuzzRuns(tb testing.TB) []*run {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0", MaxRetries: -1})
	tb.Cleanup(func() { _ = rdb.Close() })
	var runs []*run
	for _, cfg := range []Config{
		{Logger: quietLogger()},
		{Logger: quietLogger(), MaxPayloadBytes: 256, MaxIDBytes: 8, MaxErrorBytes: 16},
	} {
		c, err := NewConsumer(rdb, &MemoryRegistry{}, HandlerFunc(func(context.Context, *Completion) error { return nil }), cfg)
		if err != nil {
			tb.Fatal(err)
		}
		runs = append(runs, newRun(c, c.cfg))
	}
	return runs
}

// fuzzValues builds an entry's field map from up to three (name, value)
// pairs, as go-redis would hand it over (string values), or, as selected by
// kinds, with values of other types, a nil map (an entry deleted while
// pending) or an empty one. Bits 2i..2i+1 of kinds give pair i's value type:
// 0 string, 1 []byte, 2 nil, 3 int64. Bit 6 makes the map nil, bit 7 drops
// the pairs whose name is empty instead of keeping them under "".
func fuzzValues(names [3]string, values [3][]byte, kinds byte) map[string]any {
	if kinds&(1<<6) != 0 {
		return nil
	}
	m := make(map[string]any, 3)
	for i := range names {
		if names[i] == "" && kinds&(1<<7) != 0 {
			continue
		}
		var v any
		switch (kinds >> (2 * i)) & 3 {
		case 0:
			v = string(values[i])
		case 1:
			v = bytes.Clone(values[i])
		case 2:
			v = nil
		case 3:
			v = int64(len(values[i]))
		}
		m[names[i]] = v // a later pair with the same name wins, as in a map
	}
	return m
}

// fuzzCloneValues deep-copies an entry's field map.
func fuzzCloneValues(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		if b, ok := v.([]byte); ok {
			v = bytes.Clone(b)
		}
		c[k] = v
	}
	return c
}

// FuzzEntry feeds arbitrary stream entries (any field names, any bytes,
// values of unexpected types) through the consumer's own decoding step,
// (*run).newDeliveries, and checks its dispatch decision against an
// independent rendering of the rules: the entry is either dead-lettered as
// malformed or oversize (with the decoded message cleared, so that no
// oversize id reaches a log), or decoded into a valid message whose ids
// and error text are within the limits, equal to what decodeMessage makes
// of a copy of the bytes. A decoded message re-encoded and decoded again is
// unchanged, and its encoding is stable. The entry is never modified.
//
// Seeds live in testdata/fuzz/FuzzEntry as well as below.
func FuzzEntry(f *testing.F) {
	valid := `{"operation_id":"op-1","task_id":"t-1","success":true,"result":null,"error":null}`
	seeds := []struct {
		n1, v1, n2, v2, n3, v3 string
		kinds                  byte
	}{
		{n1: "data", v1: valid},
		{n1: "data", v1: `{"operation_id":"o","session_id":"s","success":"true","result":{"z":1,"a":"é"},"error":"x"}`, n2: "dl_reason", v2: "forged"},
		{n1: "payload", v1: valid},
		{n1: "data", v1: valid, kinds: 1},
		{n1: "data", v1: valid, kinds: 1 << 6},
		{n1: "data", v1: `{"operation_id":"` + strings.Repeat("o", 600) + `","task_id":"t","success":true}`},
		{n1: "data", v1: `{"operation_id":"o","task_id":"t","success":false,"error":"` + strings.Repeat("e", 40) + `"}`},
		{n1: "data", v1: `{"operation_id":"o","task_id":"t","success":true,"result":` + strings.Repeat("[", 2000)},
		{n1: "data", v1: "{\"operation_id\":\"\xff\xfe\",\"task_id\":\"\\ud800\",\"success\":true}"},
		{n1: "data", v1: valid, n2: "data", v2: "not json", n3: "", v3: "\x00"},
		{n1: "data", v1: `{"operation_id":"o","task_id":"t","success":1,"result":"` + strings.Repeat("r", 300) + `"}`},
		{n1: "data", v1: ""},
		{n1: "data", v1: valid + " trailing"},
	}
	for _, s := range seeds {
		f.Add(s.n1, []byte(s.v1), s.n2, []byte(s.v2), s.n3, []byte(s.v3), s.kinds)
	}

	runs := fuzzRuns(f)
	f.Fuzz(func(t *testing.T, n1 string, v1 []byte, n2 string, v2 []byte, n3 string, v3 []byte, kinds byte) {
		values := fuzzValues([3]string{n1, n2, n3}, [3][]byte{v1, v2, v3}, kinds)
		for _, r := range runs {
			fuzzCheckEntry(t, r, values)
		}
	})
}

// fuzzCheckEntry runs one entry through r's decoding and checks the outcome.
func fuzzCheckEntry(t *testing.T, r *run, values map[string]any) {
	t.Helper()
	cfg := r.cfg
	orig := fuzzCloneValues(values)
	ds := r.newDeliveries([]redis.XMessage{{ID: fuzzEntryID, Values: values}}, nil)
	if len(ds) != 1 {
		t.Fatalf("newDeliveries returned %d deliveries for one entry", len(ds))
	}
	d := &ds[0]
	if !reflect.DeepEqual(values, orig) {
		t.Fatalf("decoding modified the entry: %#v, was %#v", values, orig)
	}
	if d.id != fuzzEntryID || d.count != 1 || d.retryIdx != -1 {
		t.Fatalf("delivery id %q, count %d, retryIdx %d", d.id, d.count, d.retryIdx)
	}
	if reflect.ValueOf(d.values).Pointer() != reflect.ValueOf(values).Pointer() {
		t.Fatalf("the delivery does not keep the entry's fields (the dead letter copies them)")
	}

	// The rules, stated independently.
	wantReason := ""
	var want Message
	raw, ok := values[DataField]
	s, isString := raw.(string)
	switch {
	case !ok || !isString:
		wantReason = ReasonMalformed
	case len(s) > cfg.MaxPayloadBytes, entryBytes(values) > cfg.MaxPayloadBytes:
		wantReason = ReasonOversize
	default:
		if err := decodeMessage([]byte(s), &want); err != nil {
			wantReason = ReasonMalformed
		} else if len(want.OperationID) > cfg.MaxIDBytes || len(want.TaskID) > cfg.MaxIDBytes || len(want.Error) > cfg.MaxErrorBytes {
			wantReason = ReasonOversize
		}
	}

	if d.badMsg != nil {
		if d.reason != ReasonMalformed && d.reason != ReasonOversize {
			t.Fatalf("dead-letter reason %q for %v", d.reason, d.badMsg)
		}
		if !errors.Is(d.badMsg, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", d.badMsg)
		}
		if d.reason != wantReason {
			t.Fatalf("reason %q (%v), want %q (limits %d/%d/%d)", d.reason, d.badMsg, wantReason,
				cfg.MaxPayloadBytes, cfg.MaxIDBytes, cfg.MaxErrorBytes)
		}
		if d.msg.OperationID != "" || d.msg.TaskID != "" || d.msg.Error != "" || d.msg.Result != nil || d.msg.Success {
			t.Fatalf("a rejected entry keeps a decoded message (its ids may reach logs): %+v", d.msg)
		}
		return
	}
	if d.reason != "" || wantReason != "" {
		t.Fatalf("entry accepted (reason %q), want it dead-lettered as %q", d.reason, wantReason)
	}
	m := d.msg
	switch {
	case m.OperationID == "" || m.TaskID == "":
		t.Fatalf("accepted a message with an empty id: %+v", m)
	case len(m.OperationID) > cfg.MaxIDBytes || len(m.TaskID) > cfg.MaxIDBytes:
		t.Fatalf("accepted ids of %d and %d bytes, over MaxIDBytes %d", len(m.OperationID), len(m.TaskID), cfg.MaxIDBytes)
	case len(m.Error) > cfg.MaxErrorBytes:
		t.Fatalf("accepted an error text of %d bytes, over MaxErrorBytes %d", len(m.Error), cfg.MaxErrorBytes)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("accepted message %+v fails Validate: %v", m, err)
	}
	// The zero-copy decoding of the string agrees with decodeMessage on a
	// copy of its bytes, Result byte for byte.
	if m.OperationID != want.OperationID || m.TaskID != want.TaskID || m.Success != want.Success ||
		m.Error != want.Error || !bytes.Equal(m.Result, want.Result) {
		t.Fatalf("consumer decoded %+v, decodeMessage %+v", m, want)
	}

	// Round trip through the wire form and the consumer again.
	wire, err := m.AppendJSON(nil)
	if err != nil {
		t.Fatalf("AppendJSON of an accepted message: %v", err)
	}
	again := r.newDeliveries([]redis.XMessage{{ID: fuzzEntryID, Values: map[string]any{DataField: string(wire)}}}, nil)
	d2 := &again[0]
	if len(wire) > cfg.MaxPayloadBytes {
		// The wire form writes every key and may be longer than the input.
		if d2.reason != ReasonOversize {
			t.Fatalf("re-encoded message of %d bytes (limit %d): reason %q, %v", len(wire), cfg.MaxPayloadBytes, d2.reason, d2.badMsg)
		}
		return
	}
	if d2.badMsg != nil {
		t.Fatalf("re-encoded message %q is rejected: %v", wire, d2.badMsg)
	}
	if !equalMessages(m, d2.msg) {
		t.Fatalf("round trip changed the message:\n in  %+v\n out %+v\n wire %q", m, d2.msg, wire)
	}
	wire2, err := d2.msg.AppendJSON(nil)
	if err != nil || !bytes.Equal(wire, wire2) {
		t.Fatalf("re-encoding is not stable: %q then %q (%v)", wire, wire2, err)
	}
}

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
