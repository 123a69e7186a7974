package scripts

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The scripts of package taskstream: per-task streams in the Python
// service's layout.
var (
	//go:embed task_append.lua
	taskAppendSrc string
	//go:embed task_outcome.lua
	taskOutcomeSrc string

	// TaskAppend appends events to a task's stream, refreshes its TTL and
	// publishes them on the task's channel (task_append.lua).
	TaskAppend = redis.NewScript(taskAppendSrc)
	// TaskOutcome writes an operation's outcome and finish events to a
	// task's stream once, optionally with the task's status change and the
	// completion's acknowledgement (task_outcome.lua).
	TaskOutcome = redis.NewScript(taskOutcomeSrc)
)

// Reply codes of TaskOutcome (the first element of its reply).
const (
	TaskOutcomeWritten    = 1 // both events written
	TaskOutcomeFound      = 0 // already written for this operation
	TaskOutcomeNotRunning = 2 // the task's status is not "running": nothing written
	TaskOutcomeNoTask     = 3 // the task's meta hash does not exist: nothing written
	TaskOutcomeFinished   = 4 // the stream already ends with a finish event: nothing written
)

// TaskStreamOperationField is the entry field in which TaskOutcome records
// the operation id, next to "data".
const TaskStreamOperationField = "operation_id"
