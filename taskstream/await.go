package taskstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
)

// Outcome is how an operation ended, as its task's stream tells it: the
// first tool output or error event of the stream.
type Outcome struct {
	// TaskID is the task's id.
	TaskID string
	// OperationID is the operation that wrote the event ([Handler] records
	// it); "" for an event written otherwise (by the Python service).
	OperationID string
	// EntryID is the event's stream entry id.
	EntryID string
	// Success is true for a tool output event ("tool-output-available"
	// whose "success" is not false), false for an error event.
	Success bool
	// Output is the tool output: the "output" string (the result
	// serialized as JSON text, or a string result as it is), or the
	// output's JSON text when it is not a string.
	Output string
	// ErrorText is the error event's "errorText".
	ErrorText string
	// Event is the event's JSON as written.
	Event json.RawMessage
}

// Await waits until task taskID's stream holds an outcome (a tool output or
// an error event) and returns it, whichever pod wrote it, also when it was
// written before the call: it subscribes from the stream's start. It
// returns ctx's error when ctx ends first, [ErrNoOutcome] when the stream
// finishes without an outcome, and the errors of [Hub.Subscribe]. Await
// does not look the task up: for a task whose stream has expired it waits
// until ctx ends (use AwaitOperation, or a deadline).
func (h *Hub) Await(ctx context.Context, taskID string) (Outcome, error) {
	sub, err := h.Subscribe(ctx, taskID, "0-0")
	if err != nil {
		return Outcome{}, err
	}
	defer sub.Close()
	for {
		e, err := sub.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Outcome{}, fmt.Errorf("%w: task %q", ErrNoOutcome, taskID)
			}
			return Outcome{}, err
		}
		if o, ok := outcomeOf(taskID, e); ok {
			return o, nil
		}
	}
}

// AwaitOperation waits for the outcome of operation operationID: it looks
// the operation's task up in registry (by operation id, as the consumer
// does) and waits as [Hub.Await] does. A task that is no longer running
// (its outcome was written before the status changed) is answered from its
// stream at once, with [ErrNoOutcome] when the stream holds none. It returns
// an error wrapping [completion.ErrTaskNotFound] when the operation is not
// known.
func (h *Hub) AwaitOperation(ctx context.Context, registry completion.TaskRegistry, operationID string) (Outcome, error) {
	if operationID == "" {
		return Outcome{}, fmt.Errorf("%w: empty operation id", completion.ErrTaskNotFound)
	}
	task, err := registry.LookupTask(ctx, operationID, "")
	if err != nil {
		return Outcome{}, err
	}
	if task.Status == "" || task.Status == redisregistry.StatusRunning {
		return h.Await(ctx, task.TaskID)
	}
	after := "0-0"
	for {
		evs, err := h.streams.Read(ctx, task.TaskID, after, 0)
		if err != nil {
			return Outcome{}, err
		}
		for _, e := range evs {
			if o, ok := outcomeOf(task.TaskID, e); ok {
				return o, nil
			}
		}
		if len(evs) < DefaultReadLimit {
			return Outcome{}, fmt.Errorf("%w: task %q is %s", ErrNoOutcome, task.TaskID, task.Status)
		}
		after = evs[len(evs)-1].ID
	}
}

// outcomeOf reads e as an outcome, if it is one.
func outcomeOf(taskID string, e Event) (Outcome, bool) {
	var v struct {
		Type      string          `json:"type"`
		Output    json.RawMessage `json:"output"`
		Success   *bool           `json:"success"`
		ErrorText string          `json:"errorText"`
	}
	if json.Unmarshal(e.Data, &v) != nil {
		return Outcome{}, false
	}
	o := Outcome{TaskID: taskID, OperationID: e.OperationID, EntryID: e.ID, Event: e.Data}
	switch v.Type {
	case "tool-output-available":
		o.Success = v.Success == nil || *v.Success
		var s string
		if json.Unmarshal(v.Output, &s) == nil {
			o.Output = s
		} else {
			o.Output = string(v.Output)
		}
	case "error":
		o.ErrorText = v.ErrorText
	default:
		return Outcome{}, false
	}
	return o, true
}
