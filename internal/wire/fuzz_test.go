package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeMessage checks, for any input, that Decode does not
// panic, that its errors wrap ErrMalformed, that it agrees with the
// encoding/json reference where that can judge, and that whatever it
// accepts survives AppendJSON and a second decode unchanged.
//
// Seeds live in testdata/fuzz/FuzzDecodeMessage as well as below.
func FuzzDecodeMessage(f *testing.F) {
	for _, g := range goldenCases(f) {
		f.Add([]byte(g.golden))
	}
	for _, s := range []string{
		`{"operation_id":"o","session_id":"s","success":"YES","result":{"a":[1,{"b":"\u00e9"}]}}`,
		`{"operation_id":"o","task_id":"t","success":1.0,"result":"\ud83c\udf89","error":"e\n"}`,
		`{"operation_id":"o","task_id":"t","success":true,"result":5}`,
		`{"operation_id":"o","task_id":"t","success":true}}`,
		`{"x":"\ud800"}`,
		"{\"x\":\"\xed\xa0\x80\"}",
		`[[[[[[[[[[[[[[[[`,
		``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		var m Message
		err := Decode(data, &m)
		if !bytes.Equal(orig, data) {
			t.Fatalf("Decode modified its input")
		}

		if ref, refErr, judged := refDecode(data); judged {
			switch {
			case refErr != nil && err == nil:
				t.Fatalf("reference rejects %q (%v), Decode accepts: %+v", data, refErr, m)
			case refErr == nil && err != nil:
				t.Fatalf("reference accepts %q, Decode rejects: %v", data, err)
			case err == nil && !equalMessages(ref, m):
				t.Fatalf("input %q: reference %+v, Decode %+v", data, ref, m)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}

		if _, err := Validate(&m); err != nil {
			t.Fatalf("decoded message %+v fails Validate: %v", m, err)
		}
		out, err := m.AppendJSON(nil)
		if err != nil {
			t.Fatalf("AppendJSON: %v", err)
		}
		marshaled, err := m.MarshalJSON()
		if err != nil || !bytes.Equal(out, marshaled) {
			t.Fatalf("MarshalJSON = %q, %v; AppendJSON = %q", marshaled, err, out)
		}
		var back Message
		if err := Decode(out, &back); err != nil {
			t.Fatalf("decoding our own output %q: %v", out, err)
		}
		if !equalMessages(m, back) {
			t.Fatalf("round trip changed the message:\n in  %+v\n out %+v\n wire %q", m, back, out)
		}
		again, err := back.AppendJSON(nil)
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("re-encoding is not stable: %q then %q (%v)", out, again, err)
		}
	})
}

// equalMessages compares messages with Result compared after compaction.
func equalMessages(a, b Message) bool {
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
