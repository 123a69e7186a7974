package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/wire"
)

// fuzzEntryID is the id of the entries FuzzEntry builds.
const fuzzEntryID = "1700000000000-7"

// fuzzEngines returns engines with the library's default limits and with
// tiny ones, so that every limit is reached by short inputs. Nothing is
// contacted: decoding an entry does not talk to Redis.
func fuzzEngines() []*Engine {
	var out []*Engine
	for _, s := range []Settings{
		{MaxPayloadBytes: 1 << 20, MaxIDBytes: 512, MaxErrorBytes: 64 << 10},
		{MaxPayloadBytes: 256, MaxIDBytes: 8, MaxErrorBytes: 16},
	} {
		s.Concurrency, s.BatchSize = 1, 1
		out = append(out, New(Params{Settings: s, Log: slog.New(slog.DiscardHandler)}))
	}
	return out
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

	engines := fuzzEngines()
	f.Fuzz(func(t *testing.T, n1 string, v1 []byte, n2 string, v2 []byte, n3 string, v3 []byte, kinds byte) {
		values := fuzzValues([3]string{n1, n2, n3}, [3][]byte{v1, v2, v3}, kinds)
		for _, e := range engines {
			fuzzCheckEntry(t, e, values)
		}
	})
}

// fuzzCheckEntry runs one entry through e's decoding and checks the outcome.
func fuzzCheckEntry(t *testing.T, e *Engine, values map[string]any) {
	t.Helper()
	cfg := e.p.Settings
	orig := fuzzCloneValues(values)
	ds := e.decode([]redis.XMessage{{ID: fuzzEntryID, Values: values}}, nil)
	if len(ds) != 1 {
		t.Fatalf("newDeliveries returned %d deliveries for one entry", len(ds))
	}
	d := &ds[0]
	if !reflect.DeepEqual(values, orig) {
		t.Fatalf("decoding modified the entry: %#v, was %#v", values, orig)
	}
	if d.ID != fuzzEntryID || d.Count != 1 || d.retryIdx != notQueued {
		t.Fatalf("delivery id %q, count %d, retryIdx %d", d.ID, d.Count, d.retryIdx)
	}
	if reflect.ValueOf(d.Fields).Pointer() != reflect.ValueOf(values).Pointer() {
		t.Fatalf("the delivery does not keep the entry's fields (the dead letter copies them)")
	}

	// The rules, stated independently.
	wantReason := ""
	var want wire.Message
	raw, ok := values[wire.DataField]
	s, isString := raw.(string)
	switch {
	case !ok || !isString:
		wantReason = wire.ReasonMalformed
	case len(s) > cfg.MaxPayloadBytes, wire.EntryBytes(values) > cfg.MaxPayloadBytes:
		wantReason = wire.ReasonOversize
	default:
		if err := wire.Decode([]byte(s), &want); err != nil {
			wantReason = wire.ReasonMalformed
		} else if len(want.OperationID) > cfg.MaxIDBytes || len(want.TaskID) > cfg.MaxIDBytes || len(want.Error) > cfg.MaxErrorBytes {
			wantReason = wire.ReasonOversize
		}
	}

	if d.Bad != nil {
		if d.Reason != wire.ReasonMalformed && d.Reason != wire.ReasonOversize {
			t.Fatalf("dead-letter reason %q for %v", d.Reason, d.Bad)
		}
		if !errors.Is(d.Bad, wire.ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", d.Bad)
		}
		if d.Reason != wantReason {
			t.Fatalf("reason %q (%v), want %q (limits %d/%d/%d)", d.Reason, d.Bad, wantReason,
				cfg.MaxPayloadBytes, cfg.MaxIDBytes, cfg.MaxErrorBytes)
		}
		if d.Msg.OperationID != "" || d.Msg.TaskID != "" || d.Msg.Error != "" || d.Msg.Result != nil || d.Msg.Success {
			t.Fatalf("a rejected entry keeps a decoded message (its ids may reach logs): %+v", d.Msg)
		}
		return
	}
	if d.Reason != "" || wantReason != "" {
		t.Fatalf("entry accepted (reason %q), want it dead-lettered as %q", d.Reason, wantReason)
	}
	m := d.Msg
	switch {
	case m.OperationID == "" || m.TaskID == "":
		t.Fatalf("accepted a message with an empty id: %+v", m)
	case len(m.OperationID) > cfg.MaxIDBytes || len(m.TaskID) > cfg.MaxIDBytes:
		t.Fatalf("accepted ids of %d and %d bytes, over MaxIDBytes %d", len(m.OperationID), len(m.TaskID), cfg.MaxIDBytes)
	case len(m.Error) > cfg.MaxErrorBytes:
		t.Fatalf("accepted an error text of %d bytes, over MaxErrorBytes %d", len(m.Error), cfg.MaxErrorBytes)
	}
	if _, err := wire.Validate(&m); err != nil {
		t.Fatalf("accepted message %+v fails Validate: %v", m, err)
	}
	// The zero-copy decoding of the string agrees with decodeMessage on a
	// copy of its bytes, Result byte for byte.
	if m.OperationID != want.OperationID || m.TaskID != want.TaskID || m.Success != want.Success ||
		m.Error != want.Error || !bytes.Equal(m.Result, want.Result) {
		t.Fatalf("consumer decoded %+v, decodeMessage %+v", m, want)
	}

	// Round trip through the wire form and the consumer again.
	compact, err := wire.Validate(&m)
	if err != nil {
		t.Fatalf("Validate of an accepted message: %v", err)
	}
	out := wire.Append(nil, &m, compact)
	again := e.decode([]redis.XMessage{{ID: fuzzEntryID, Values: map[string]any{wire.DataField: string(out)}}}, nil)
	d2 := &again[0]
	if len(out) > cfg.MaxPayloadBytes {
		// The wire form writes every key and may be longer than the input.
		if d2.Reason != wire.ReasonOversize {
			t.Fatalf("re-encoded message of %d bytes (limit %d): reason %q, %v", len(out), cfg.MaxPayloadBytes, d2.Reason, d2.Bad)
		}
		return
	}
	if d2.Bad != nil {
		t.Fatalf("re-encoded message %q is rejected: %v", out, d2.Bad)
	}
	if !equalMessages(m, d2.Msg) {
		t.Fatalf("round trip changed the message:\n in  %+v\n out %+v\n wire %q", m, d2.Msg, out)
	}
	compact2, err := wire.Validate(&d2.Msg)
	if out2 := wire.Append(nil, &d2.Msg, compact2); err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("re-encoding is not stable: %q then %q (%v)", out, out2, err)
	}
}

// equalMessages compares messages with Result compared after compaction.
func equalMessages(a, b wire.Message) bool {
	return a.OperationID == b.OperationID && a.TaskID == b.TaskID && a.Success == b.Success &&
		a.Error == b.Error && bytes.Equal(compactRaw(a.Result), compactRaw(b.Result))
}

// compactRaw compacts a valid Result, with empty and null both as null.
func compactRaw(r []byte) []byte {
	if len(r) == 0 {
		return []byte("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, r); err != nil {
		return r
	}
	return buf.Bytes()
}
