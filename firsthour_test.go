package completion

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/redistest"
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

// TestNilArgumentsAreRefused: nil and typed-nil dependencies are refused
// with an error naming the argument, not dead-lettered one by one later.
func TestNilArgumentsAreRefused(t *testing.T) {
	rdb := newMini(t)
	var nilClient *redis.Client
	var nilRegistry *MemoryRegistry
	var nilFunc HandlerFunc
	var nilTaskFunc TaskRegistryFunc
	reg, h := registryWith(1), newRecorder()
	for _, tt := range []struct {
		name   string
		client RedisClient
		reg    TaskRegistry
		h      CompletionHandler
	}{
		{"client", nil, reg, h}, {"client", nilClient, reg, h},
		{"registry", rdb, nil, h}, {"registry", rdb, nilRegistry, h}, {"registry", rdb, nilTaskFunc, h},
		{"handler", rdb, reg, nil}, {"handler", rdb, reg, nilFunc},
	} {
		_, err := NewConsumer(tt.client, tt.reg, tt.h, Config{})
		require.ErrorIs(t, err, ErrNilArgument, "%s %T", tt.name, tt.client)
		assert.NotErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), "the "+tt.name+" is nil")
	}
}

// TestStartTimeoutEndsRunWithTheCause: against an address nothing listens
// on, Run does not look like a healthy start: it logs the cause at ERROR
// once and returns, after StartTimeout, an error that wraps the dial error
// and says what to check.
func TestStartTimeoutEndsRunWithTheCause(t *testing.T) {
	for _, partitions := range []int{1, 4} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
			t.Cleanup(func() { _ = rdb.Close() })
			var logs lockedBuffer
			cfg := testConfig("first-hour:start")
			cfg.Partitions = partitions
			cfg.StartTimeout = 500 * time.Millisecond
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c := newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfg)
			done := make(chan error, 1)
			go func() { done <- c.Run(context.Background()) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not give up")
			}
			require.ErrorIs(t, err, ErrStartTimeout)
			var op *net.OpError
			require.ErrorAs(t, err, &op, "the dial error is wrapped: %v", err)
			assert.Contains(t, err.Error(), "StartTimeout")
			assert.Contains(t, err.Error(), "address, password and TLS")
			assert.Equal(t, 1, strings.Count(logs.String(), "level=ERROR"), "the cause is logged at ERROR once:\n%s", logs.String())
			assert.NotContains(t, logs.String(), "level=WARN")
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStateIsRunningAsSoonAsRedisAnswers: after an outage the state goes
// back to running with the first call that works, not after a whole Block.
func TestStateIsRunningAsSoonAsRedisAnswers(t *testing.T) {
	proxy := redistest.NewProxy(t, sharedRedisAddr(t))
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	cfg := testConfig(uniqueStream(t, realClient(t)))
	cfg.Block = time.Minute // a read that blocks outlasts the test by far
	cfg.ErrorBackoff, cfg.MaxErrorBackoff = 10*time.Millisecond, 20*time.Millisecond
	c := newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfg)
	startConsumer(t, c)
	eventually(t, func() bool { return c.State() == StateRunning }, "not running")
	proxy.SetRefuse(true)
	proxy.CutAll()
	eventually(t, func() bool { return c.State() == StateDegraded }, "not degraded while Redis is cut off")
	proxy.SetRefuse(false)
	eventually(t, func() bool { return c.State() == StateRunning }, "still %v after Redis came back", c.State())
}

// TestConfigFloors: values that cannot work are refused, naming the field.
func TestConfigFloors(t *testing.T) {
	for _, tt := range []struct {
		cfg   Config
		field string
	}{
		{Config{ClaimMinIdle: 10 * time.Millisecond}, "ClaimMinIdle"},
		{Config{ClaimMinIdle: 200 * time.Millisecond, AckDelay: 50 * time.Millisecond}, "ClaimMinIdle"},
		{Config{MaxReadAheadBytes: 1000}, "MaxReadAheadBytes"},
		{Config{StartTimeout: -time.Second}, "StartTimeout"},
	} {
		_, err := tt.cfg.withDefaults()
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", tt.cfg)
		assert.Contains(t, err.Error(), tt.field)
	}
	c, err := Config{StartTimeout: NoStartTimeout}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, NoStartTimeout, c.StartTimeout)
}
