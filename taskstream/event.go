package taskstream

import (
	"bytes"
	"encoding/json"

	"github.com/streamrelay/completion"
)

// Event is one entry of a task's stream.
type Event struct {
	// ID is the stream entry id, "<milliseconds>-<sequence>": the SSE
	// event id, and the lastID to resume after this event.
	ID string
	// Data is the event's JSON, as written (field "data" of the entry).
	// It is shared: do not modify it.
	Data json.RawMessage
	// OperationID is the operation whose outcome wrote the event (the
	// entry's "operation_id" field, written by [Handler]); "" for events
	// written otherwise, such as by [Streams.Append] or the Python service.
	OperationID string

	id streamID
}

// Type returns the event's "type" ("tool-output-available", "error",
// "finish", ...), or "" when Data is not a JSON object with a string type.
func (e Event) Type() string {
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(e.Data, &v) != nil {
		return ""
	}
	return v.Type
}

// IsFinish reports whether e is a finish event, the last of a task's
// stream.
func (e Event) IsFinish() bool {
	// A cheap test first: most events are not finish events.
	return bytes.Contains(e.Data, []byte(`"finish"`)) && e.Type() == "finish"
}

// OutcomeEvent returns the event the Python service writes for an
// operation's outcome, in the AI SDK UI stream protocol, byte for byte:
//
//   - success: {"type":"tool-output-available","toolCallId":<task.ToolCallID>,
//     "toolName":<task.ToolName>,"output":<result as a JSON string>,"success":true}
//     where the output string is a string result as it is, an object result
//     as its JSON text, and a null (or empty) result {"status":"completed"};
//   - failure: {"type":"error","errorText":<msg.Error, or "Operation failed">}.
//
// Strings are escaped as the Python service escapes them (see
// [completion.Message.AppendJSON]): non-ASCII, '<', '>' and '&' are
// written raw.
func OutcomeEvent(task completion.Task, msg completion.Message) json.RawMessage {
	if !msg.Success {
		text := msg.Error
		if text == "" {
			text = "Operation failed"
		}
		b := make([]byte, 0, 40+len(text))
		b = append(b, `{"type":"error","errorText":`...)
		b = append(b, completion.StringResult(text)...)
		return append(b, '}')
	}
	output := resultText(msg.Result)
	b := make([]byte, 0, 110+len(task.ToolCallID)+len(task.ToolName)+len(output)*5/4)
	b = append(b, `{"type":"tool-output-available","toolCallId":`...)
	b = append(b, completion.StringResult(task.ToolCallID)...)
	b = append(b, `,"toolName":`...)
	b = append(b, completion.StringResult(task.ToolName)...)
	b = append(b, `,"output":`...)
	b = append(b, completion.StringResult(output)...)
	return append(b, `,"success":true}`...)
}

// resultText is the text the output of a successful operation holds: a
// string result's value, an object's JSON text, {"status":"completed"} for
// null.
func resultText(result json.RawMessage) string {
	r := bytes.TrimSpace(result)
	switch {
	case len(r) == 0 || string(r) == "null":
		return `{"status":"completed"}`
	case r[0] == '"':
		var s string
		if json.Unmarshal(r, &s) == nil {
			return s
		}
	}
	return string(r)
}
