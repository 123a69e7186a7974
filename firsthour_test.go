package completion

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for what a newcomer runs into in the first hour.

// TestRegistriesShareTheTaskRule: MemoryRegistry refuses what the
// consumer would dead-letter as invalid_task, with the error of
// Task.Require; a service without tool calls says what it requires, in
// the registry and in the Config alike.
func TestRegistriesShareTheTaskRule(t *testing.T) {
	reg := &MemoryRegistry{}
	err := reg.Register(Task{TaskID: "t1", SessionID: "s"})
	require.ErrorIs(t, err, ErrInvalidTask)
	assert.Equal(t, `completion: invalid task "t1": empty ToolCallID`, err.Error())
	_, err = reg.LookupTask(context.Background(), "", "t1")
	assert.ErrorIs(t, err, ErrTaskNotFound, "nothing was stored")
	assert.Equal(t, Task{TaskID: "t1", SessionID: "s"}.Validate(), reg.Register(Task{TaskID: "t1", SessionID: "s"}), "the same error")

	err = (&MemoryRegistry{}).Register(Task{SessionID: "s", ToolCallID: "c"})
	assert.ErrorIs(t, err, ErrInvalidTask)
	assert.Contains(t, err.Error(), "TaskID")

	noTools := &MemoryRegistry{RequiredFields: []string{"SessionID"}}
	require.NoError(t, noTools.Register(Task{TaskID: "t1", SessionID: "s"}))
	assert.ErrorIs(t, noTools.Register(Task{TaskID: "t2"}), ErrInvalidTask)

	_, err = Config{RequiredTaskFields: []string{"SessionId"}}.withDefaults()
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "RequiredTaskFields")
	assert.ErrorIs(t, (&MemoryRegistry{RequiredFields: []string{"nope"}}).Register(Task{TaskID: "t"}), ErrInvalidConfig)
}

// TestRequiredTaskFieldsDecideWhatIsHandled: with a rule that requires
// only SessionID, a task without a tool call is handed to the handler.
func TestRequiredTaskFieldsDecideWhatIsHandled(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		reg := &MemoryRegistry{RequiredFields: []string{"SessionID"}}
		require.NoError(t, reg.Register(Task{TaskID: "t-1", SessionID: "s", OperationID: "op-1"}))
		cfg := testConfig(stream)
		cfg.RequiredTaskFields = []string{"SessionID"}
		h := newRecorder()
		startConsumer(t, newTestConsumer(t, b.rdb, reg, h, cfg))
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		assert.Equal(t, "t-1", h.next(t).Task.TaskID)
	})
}
