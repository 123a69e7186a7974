package completion

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Task is the unit of work a completion belongs to, as a [TaskRegistry]
// knows it. The field set follows the Python service's task metadata.
type Task struct {
	TaskID      string
	SessionID   string
	UserID      string
	ToolCallID  string
	ToolName    string
	OperationID string
	// Status is the registry's status text, e.g. "running", "completed" or
	// "failed". The consumer does not interpret it.
	Status    string
	CreatedAt time.Time
}

// Validate reports whether t can be handed to a handler under the Python
// service's rule: TaskID, SessionID and ToolCallID must be set. It is
// t.Require("SessionID", "ToolCallID").
func (t Task) Validate() error { return t.Require(defaultRequiredTaskFields...) }

// defaultRequiredTaskFields is the Python service's rule, the default of
// Config.RequiredTaskFields and MemoryRegistry.RequiredFields.
var defaultRequiredTaskFields = []string{"SessionID", "ToolCallID"}

// Require reports whether t's TaskID and the fields named (by their Go
// names: "SessionID", "UserID", "ToolCallID", "ToolName", "OperationID")
// are set. The error wraps [ErrInvalidTask] and names the empty fields; a
// name that is not one of these is an error wrapping [ErrInvalidConfig].
func (t Task) Require(fields ...string) error {
	var missing []string
	if t.TaskID == "" {
		missing = append(missing, "TaskID")
	}
	for _, f := range fields {
		v, ok := t.field(f)
		switch {
		case !ok:
			return fmt.Errorf("%w: %q is not a Task field that can be required (want SessionID, UserID, ToolCallID, ToolName or OperationID)", ErrInvalidConfig, f)
		case v == "":
			missing = append(missing, f)
		}
	}
	if missing != nil {
		return fmt.Errorf("%w %q: empty %s", ErrInvalidTask, t.TaskID, strings.Join(missing, ", "))
	}
	return nil
}

// field returns the value of the Task field named name.
func (t Task) field(name string) (string, bool) {
	switch name {
	case "TaskID":
		return t.TaskID, true
	case "SessionID":
		return t.SessionID, true
	case "UserID":
		return t.UserID, true
	case "ToolCallID":
		return t.ToolCallID, true
	case "ToolName":
		return t.ToolName, true
	case "OperationID":
		return t.OperationID, true
	}
	return "", false
}

// checkRequiredFields checks a list of field names for Require.
func checkRequiredFields(fields []string) error {
	return Task{TaskID: "-", SessionID: "-", UserID: "-", ToolCallID: "-", ToolName: "-", OperationID: "-"}.Require(fields...)
}

// TaskRegistry finds the task a completion belongs to.
//
// LookupTask looks the task up by operation id first and, when that is not
// known, by task id, as the Python consumer does. It returns an error
// wrapping [ErrTaskNotFound] when neither is known; any other error (Redis
// down, a timeout) is taken as transient and the entry is retried.
//
// Implementations must be safe for concurrent use: the consumer calls
// LookupTask from Config.Concurrency goroutines.
type TaskRegistry interface {
	LookupTask(ctx context.Context, operationID, taskID string) (Task, error)
}

// TaskKey names a task to look up: by operation id first, then by task id.
type TaskKey struct {
	OperationID string
	TaskID      string
}

// BatchTaskRegistry is a [TaskRegistry] that can look up many tasks at
// once. The consumer uses LookupTasks, when the registry has it, for each
// batch of new entries it reads: one call (for package redisregistry, one round
// trip) instead of one per entry.
//
// LookupTasks returns one Task and one error per key, in the order of keys.
// Each error is nil, wraps [ErrTaskNotFound], or reports a failure of the
// registry, with the same meaning as LookupTask's.
type BatchTaskRegistry interface {
	TaskRegistry
	LookupTasks(ctx context.Context, keys []TaskKey) ([]Task, []error)
}

// TaskRegistryFunc adapts a function to a [TaskRegistry].
type TaskRegistryFunc func(ctx context.Context, operationID, taskID string) (Task, error)

// LookupTask calls f(ctx, operationID, taskID).
func (f TaskRegistryFunc) LookupTask(ctx context.Context, operationID, taskID string) (Task, error) {
	return f(ctx, operationID, taskID)
}

// MemoryRegistry is an in-memory [TaskRegistry] for tests, examples and
// single-process programs. The zero value is ready to use, and it is safe for
// concurrent use. Its tasks live in one process: pods of a service that
// share a stream need a registry they share, such as package redisregistry.
type MemoryRegistry struct {
	// RequiredFields are the Task fields Register requires besides TaskID,
	// by their Go names (see [Task.Require]): set it to what
	// Config.RequiredTaskFields requires. Default: SessionID and
	// ToolCallID, the Python service's rule.
	RequiredFields []string

	mu     sync.RWMutex
	byTask map[string]*Task
	byOp   map[string]*Task
}

// Register adds or replaces t, indexed by its TaskID and, when set, its
// OperationID. It returns an error wrapping [ErrInvalidTask], and stores
// nothing, when t lacks a required field (see RequiredFields), as
// redisregistry's Register does.
func (r *MemoryRegistry) Register(t Task) error {
	required := r.RequiredFields
	if required == nil {
		required = defaultRequiredTaskFields
	}
	if err := t.Require(required...); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byTask == nil {
		r.byTask = make(map[string]*Task)
		r.byOp = make(map[string]*Task)
	}
	if old, ok := r.byTask[t.TaskID]; ok && old.OperationID != "" && r.byOp[old.OperationID] == old {
		delete(r.byOp, old.OperationID)
	}
	p := &t
	r.byTask[t.TaskID] = p
	if t.OperationID != "" {
		r.byOp[t.OperationID] = p
	}
	return nil
}

// Remove deletes the task with the given id and its operation index.
func (r *MemoryRegistry) Remove(taskID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.byTask[taskID]
	if !ok {
		return
	}
	delete(r.byTask, taskID)
	if t.OperationID != "" && r.byOp[t.OperationID] == t {
		delete(r.byOp, t.OperationID)
	}
}

// LookupTask implements [TaskRegistry]: by operation id first, then by task
// id.
func (r *MemoryRegistry) LookupTask(_ context.Context, operationID, taskID string) (Task, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.byOp[operationID]; ok {
		return *t, nil
	}
	if t, ok := r.byTask[taskID]; ok {
		return *t, nil
	}
	return Task{}, fmt.Errorf("%w: operation %q, task %q", ErrTaskNotFound, operationID, taskID)
}

// NotFoundPolicy says what the consumer does with an entry whose task the
// [TaskRegistry] does not know ([ErrTaskNotFound]).
type NotFoundPolicy int

const (
	// NotFoundDeadLetter moves the entry to the dead-letter stream at once
	// with reason "task_not_found". This is the default: nothing is lost,
	// and nothing is retried that is unlikely to succeed.
	NotFoundDeadLetter NotFoundPolicy = iota
	// NotFoundRetry treats an unknown task as a transient failure: the entry
	// is retried with backoff, and dead-lettered once it reaches
	// Config.MaxDeliveries. Choose it when completions may arrive before the
	// task is registered.
	NotFoundRetry
	// NotFoundDrop logs the entry and acknowledges it, as the Python
	// consumer does. The completion is gone.
	NotFoundDrop
)

// String returns the policy's name.
func (p NotFoundPolicy) String() string {
	switch p {
	case NotFoundDeadLetter:
		return "dead-letter"
	case NotFoundRetry:
		return "retry"
	case NotFoundDrop:
		return "drop"
	}
	return fmt.Sprintf("NotFoundPolicy(%d)", int(p))
}
