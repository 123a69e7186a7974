// Package wiretest holds what the tests of the wire format share: the
// messages the Python side writes, with their exact bytes. It is imported by
// tests only.
package wiretest

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// goldenJSON holds the golden cases. They were produced with python3
// json.dumps(d, separators=(",", ":"), ensure_ascii=False) on a dict with
// the model's key order, which writes what pydantic v2 model_dump_json()
// writes for these values: both escape only '"', '\\' and control
// characters (\b \f \n \r \t short, the rest as lowercase \u00XX) and leave
// DEL, U+2028 and U+2029 raw.
//
//go:embed golden.json
var goldenJSON []byte

// Message has the fields of wire.Message and completion.Message, in their
// order, so that it converts to either.
type Message struct {
	OperationID string
	TaskID      string
	Success     bool
	Result      json.RawMessage
	Error       string
}

// Golden is a message and the exact bytes the Python side writes for it.
type Golden struct {
	Name  string
	Msg   Message
	Bytes string
}

// GoldenCases returns the golden cases.
func GoldenCases() ([]Golden, error) {
	var recs []struct {
		Name        string `json:"name"`
		OperationID string `json:"operation_id"`
		TaskID      string `json:"task_id"`
		Success     bool   `json:"success"`
		Result      string `json:"result_json"`
		Error       string `json:"error"`
		Golden      string `json:"golden"`
	}
	if err := json.Unmarshal(goldenJSON, &recs); err != nil {
		return nil, fmt.Errorf("wiretest: golden.json: %w", err)
	}
	out := make([]Golden, len(recs))
	for i, r := range recs {
		out[i] = Golden{Name: r.Name, Bytes: r.Golden, Msg: Message{
			OperationID: r.OperationID, TaskID: r.TaskID, Success: r.Success, Error: r.Error}}
		if r.Result != "" {
			out[i].Msg.Result = json.RawMessage(r.Result)
		}
	}
	return out, nil
}
