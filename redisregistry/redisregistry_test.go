package redisregistry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
)

var (
	_ Client                       = (*redis.Client)(nil)
	_ Client                       = (*redis.ClusterClient)(nil)
	_ Client                       = (*redis.Ring)(nil)
	_ Client                       = redis.UniversalClient(nil)
	_ Client                       = regHiddenClient{}
	_ completion.BatchTaskRegistry = (*Registry)(nil)
	_ completion.TaskRegistry      = (*Registry)(nil)
)

// regHiddenClient is a *redis.Client the registry cannot see as one, as it
// cannot see a ClusterClient or a Ring: it takes the multi-node path
// (pipelines instead of a key-computing script, per-key transactions).
type regHiddenClient struct{ Client }

// regTestConfig returns a config for a test on b: the Python service's own
// key names on a miniredis of the test's own, unique prefixes (cleaned up at
// the end) on the shared real Redis.
func regTestConfig(t testing.TB, b redistest.Backend) Config {
	t.Helper()
	if !b.Real {
		return Config{}
	}
	p := uniqueStream(t, b.Client)
	return Config{MetaPrefix: p + ":task:meta:", OpPrefix: p + ":task:op:"}
}

func newTestRedisRegistry(t testing.TB, c Client, cfg Config) *Registry {
	t.Helper()
	reg, err := New(c, cfg)
	require.NoError(t, err)
	return reg
}

// eachRegistryPath runs f with a registry on b's *redis.Client ("script":
// one-round-trip Lua lookups, one MULTI for both keys) and one on a
// regHiddenClient ("pipeline": the path of cluster clients and rings). Each
// starts from an empty keyspace.
func eachRegistryPath(t *testing.T, b redistest.Backend, f func(t *testing.T, reg *Registry)) {
	t.Helper()
	for _, path := range []string{"script", "pipeline"} {
		t.Run(path, func(t *testing.T) {
			if b.Mini != nil {
				b.Mini.FlushAll()
			}
			var c Client = b.Client
			if path == "pipeline" {
				c = regHiddenClient{b.Client}
			}
			reg := newTestRedisRegistry(t, c, regTestConfig(t, b))
			require.Equal(t, path == "script", reg.single)
			f(t, reg)
		})
	}
}

// pythonCreateTask writes a task as the Python service's create_task does:
// HSET of the meta hash, EXPIRE 3600, SET of the operation index with EX
// 3600. Extra fields (the Python side also writes "blocking") are written as
// given.
func pythonCreateTask(t testing.TB, rdb *redis.Client, reg *Registry, fields map[string]string) {
	t.Helper()
	ctx := context.Background()
	cfg := reg.Config()
	meta := cfg.MetaPrefix + fields["task_id"]
	var pairs []any
	for k, v := range fields {
		pairs = append(pairs, k, v)
	}
	require.NoError(t, rdb.HSet(ctx, meta, pairs...).Err())
	require.NoError(t, rdb.Expire(ctx, meta, 3600*time.Second).Err())
	if op := fields["operation_id"]; op != "" {
		require.NoError(t, rdb.Set(ctx, cfg.OpPrefix+op, fields["task_id"], 3600*time.Second).Err())
	}
}

func pythonTaskFields(taskID, opID string) map[string]string {
	return map[string]string{
		"task_id":      taskID,
		"session_id":   "sess-" + taskID,
		"user_id":      "user-1",
		"tool_call_id": "call-" + taskID,
		"tool_name":    "create_agent",
		"operation_id": opID,
		"blocking":     "0",
		"status":       "running",
		"created_at":   "2026-11-28T01:02:03.456789+00:00",
	}
}

func pythonTaskWant(taskID, opID string) completion.Task {
	return completion.Task{
		TaskID: taskID, SessionID: "sess-" + taskID, UserID: "user-1", ToolCallID: "call-" + taskID,
		ToolName: "create_agent", OperationID: opID, Status: "running",
		CreatedAt: time.Date(2026, 11, 28, 1, 2, 3, 456789000, time.UTC),
	}
}

// regRoundTrips counts the round trips a client makes: commands sent alone and
// pipelines (a MULTI/EXEC transaction is one pipeline).
type regRoundTrips struct{ n atomic.Int64 }

func (h *regRoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *regRoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !regIsConnSetup(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *regRoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !regIsConnSetup(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// regIsConnSetup reports whether cmd is part of setting up a new connection
// (HELLO, CLIENT SETINFO), which go-redis also sends through the hooks.
func regIsConnSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// count returns the round trips f makes.
func (h *regRoundTrips) count(f func()) int64 {
	before := h.n.Load()
	f()
	return h.n.Load() - before
}

// regCountingClient returns a new client to b's server with a regRoundTrips hook,
// its connection already set up.
func regCountingClient(t testing.TB, b redistest.Backend) (*redis.Client, *regRoundTrips) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: b.Client.Options().Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Ping(context.Background()).Err())
	h := &regRoundTrips{}
	rdb.AddHook(h)
	return rdb, h
}

func TestRedisRegistryConfigDefaults(t *testing.T) {
	reg := newTestRedisRegistry(t, newMini(t), Config{})
	assert.Equal(t, Config{MetaPrefix: "chat:task:meta:", OpPrefix: "chat:task:op:", TTL: 3600 * time.Second,
		RequiredFields: []string{"SessionID", "ToolCallID"}}, reg.Config())

	cfg := Config{MetaPrefix: "m:", OpPrefix: "o:", TTL: time.Minute, RequiredFields: []string{"UserID"}}
	assert.Equal(t, cfg, newTestRedisRegistry(t, newMini(t), cfg).Config())
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	rdb := newMini(t)
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"negative TTL", Config{TTL: -time.Second}, "TTL"},
		{"sub-millisecond TTL", Config{TTL: 500 * time.Microsecond}, "TTL"},
		{"same prefixes", Config{MetaPrefix: "x:", OpPrefix: "x:"}, "OpPrefix"},
		{"op prefix defaulting to meta prefix", Config{MetaPrefix: DefaultOpPrefix}, "OpPrefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := New(rdb, tt.cfg)
			require.ErrorIs(t, err, completion.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.field)
			assert.Nil(t, reg)
		})
	}
	t.Run("nil client", func(t *testing.T) {
		reg, err := New(nil, Config{})
		require.Error(t, err)
		assert.Nil(t, reg)
	})
}

func TestRedisRegistryReadsPythonTasks(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-py", "op-py"))
			want := pythonTaskWant("t-py", "op-py")

			for _, tt := range []struct{ name, op, task string }{
				{"by operation id", "op-py", "t-py"},
				{"by operation id, other task id", "op-py", "t-other"},
				{"by operation id alone", "op-py", ""},
				{"by task id, unknown operation", "op-unknown", "t-py"},
				{"by task id alone", "", "t-py"},
			} {
				got, err := reg.LookupTask(ctx, tt.op, tt.task)
				require.NoError(t, err, tt.name)
				assert.Equal(t, want, got, tt.name)
				assert.NoError(t, got.Validate(), tt.name)
			}

			// An operation index whose task's meta hash is gone (expired):
			// fall back to the task id, and nothing if that is not known.
			require.NoError(t, b.Client.Set(ctx, reg.Config().OpPrefix+"op-stale", "t-gone", time.Hour).Err())
			got, err := reg.LookupTask(ctx, "op-stale", "t-py")
			require.NoError(t, err)
			assert.Equal(t, want, got)
			for _, task := range []string{"t-gone", "t-unknown", ""} {
				_, err = reg.LookupTask(ctx, "op-stale", task)
				assert.ErrorIs(t, err, completion.ErrTaskNotFound, "task %q", task)
			}
			_, err = reg.LookupTask(ctx, "", "")
			assert.ErrorIs(t, err, completion.ErrTaskNotFound)

			// The operation index wins over the message's task id.
			pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-two", "op-two"))
			got, err = reg.LookupTask(ctx, "op-two", "t-py")
			require.NoError(t, err)
			assert.Equal(t, "t-two", got.TaskID)

			if b.Mini != nil {
				// Both keys expire after 3600 s, as the Python side sets.
				b.Mini.FastForward(3599 * time.Second)
				_, err = reg.LookupTask(ctx, "op-py", "")
				require.NoError(t, err)
				b.Mini.FastForward(2 * time.Second)
				_, err = reg.LookupTask(ctx, "op-py", "t-py")
				assert.ErrorIs(t, err, completion.ErrTaskNotFound)
			}
		})
	})
}

func TestRedisRegistryToleratesIncompletePythonData(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			// Naive created_at without fraction, no user, an unknown field.
			f := pythonTaskFields("t-naive", "op-naive")
			f["created_at"] = "2026-11-28T01:02:03"
			delete(f, "user_id")
			pythonCreateTask(t, b.Client, reg, f)
			got, err := reg.LookupTask(ctx, "op-naive", "t-naive")
			require.NoError(t, err)
			assert.Equal(t, time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC), got.CreatedAt)
			assert.Empty(t, got.UserID)

			// An unparsable created_at does not fail the lookup.
			f = pythonTaskFields("t-bad-time", "op-bad-time")
			f["created_at"] = "yesterday"
			pythonCreateTask(t, b.Client, reg, f)
			got, err = reg.LookupTask(ctx, "op-bad-time", "")
			require.NoError(t, err)
			assert.True(t, got.CreatedAt.IsZero())
			assert.Equal(t, "t-bad-time", got.TaskID)

			// Missing required fields are returned as they are; the consumer's
			// completion.Task.Validate rejects the task.
			pythonCreateTask(t, b.Client, reg, map[string]string{"task_id": "t-thin", "operation_id": "op-thin"})
			got, err = reg.LookupTask(ctx, "op-thin", "")
			require.NoError(t, err)
			assert.Equal(t, completion.Task{TaskID: "t-thin", OperationID: "op-thin"}, got)
			assert.ErrorIs(t, got.Validate(), completion.ErrInvalidTask)
		})
	})
}

func TestRedisRegistryParsesPythonCreatedAt(t *testing.T) {
	utc := time.Date(2026, 11, 28, 1, 2, 3, 456789000, time.UTC)
	whole := time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2026-11-28T01:02:03.456789+00:00", utc}, // datetime.now(timezone.utc).isoformat()
		{"2026-11-28T01:02:03+00:00", whole},      // microsecond == 0
		{"2026-11-28T01:02:03.456789", utc},       // naive: UTC
		{"2026-11-28T01:02:03", whole},
		{"2026-11-28T03:02:03.456789+02:00", utc},
		{"2026-11-27T20:32:03.456789-04:30", utc},
		{"2026-11-28T01:02:03.456Z", utc.Truncate(time.Millisecond)}, // timespec="milliseconds", "Z"
		{"2026-11-28 01:02:03.456789+00:00", utc},                    // isoformat(sep=" ")
		{"2026-11-28 01:02:03", whole},
		{"", time.Time{}},
		{"yesterday", time.Time{}},
		{"2026-11-28", time.Time{}},
		{"2026-13-28T01:02:03", time.Time{}},
	}
	for _, tt := range tests {
		got := parseTaskCreatedAt(tt.in)
		assert.True(t, tt.want.Equal(got), "parseTaskCreatedAt(%q) = %v; want %v", tt.in, got, tt.want)
		if !got.IsZero() {
			assert.Equal(t, time.UTC, got.Location(), "parseTaskCreatedAt(%q)", tt.in)
		}
	}

	// Written as Python writes it, and read back.
	local := time.Date(2026, 11, 28, 3, 2, 3, 456789123, time.FixedZone("x", 2*3600))
	assert.Equal(t, "2026-11-28T01:02:03.456789+00:00", formatTaskCreatedAt(local))
	assert.Equal(t, "2026-11-28T01:02:03.000000+00:00", formatTaskCreatedAt(whole))
	assert.True(t, utc.Equal(parseTaskCreatedAt(formatTaskCreatedAt(local))))
}

func TestRedisRegistryRegisterRoundTrip(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			cfg := reg.Config()
			task := completion.Task{TaskID: "t-go", SessionID: "s-go", UserID: "u", ToolCallID: "tc", ToolName: "tool", OperationID: "op-go"}
			before := time.Now()
			require.NoError(t, reg.Register(ctx, task))

			for _, k := range []completion.TaskKey{{OperationID: "op-go", TaskID: ""}, {OperationID: "", TaskID: "t-go"}, {OperationID: "op-go", TaskID: "t-go"}} {
				got, err := reg.LookupTask(ctx, k.OperationID, k.TaskID)
				require.NoError(t, err)
				assert.WithinDuration(t, before, got.CreatedAt, 5*time.Second)
				assert.Equal(t, StatusRunning, got.Status)
				got.CreatedAt, got.Status = time.Time{}, ""
				assert.Equal(t, task, got)
			}

			// The Python layout: all eight fields, created_at as isoformat(),
			// the operation index holding the task id.
			meta, err := b.Client.HGetAll(ctx, cfg.MetaPrefix+"t-go").Result()
			require.NoError(t, err)
			assert.Len(t, meta, 8)
			assert.Equal(t, "s-go", meta["session_id"])
			assert.Equal(t, "running", meta["status"])
			assert.Regexp(t, regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$`), meta["created_at"])
			assert.Equal(t, "t-go", b.Client.Get(ctx, cfg.OpPrefix+"op-go").Val())

			for _, key := range []string{cfg.MetaPrefix + "t-go", cfg.OpPrefix + "op-go"} {
				ttl, err := b.Client.PTTL(ctx, key).Result()
				require.NoError(t, err)
				assert.InDelta(t, 3600, ttl.Seconds(), 5, "TTL of %s", key)
			}

			// Registering again replaces the hash as a whole; a given status
			// and time are kept.
			require.NoError(t, b.Client.HSet(ctx, cfg.MetaPrefix+"t-go", "stale", "x").Err())
			created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
			task2 := completion.Task{TaskID: "t-go", SessionID: "s-2", ToolCallID: "tc-2", Status: StatusFailed, CreatedAt: created}
			require.NoError(t, reg.Register(ctx, task2))
			got, err := reg.LookupTask(ctx, "", "t-go")
			require.NoError(t, err)
			assert.Equal(t, task2, got)
			assert.False(t, b.Client.HExists(ctx, cfg.MetaPrefix+"t-go", "stale").Val())
			ttl := b.Client.PTTL(ctx, cfg.MetaPrefix+"t-go").Val()
			assert.InDelta(t, 3600, ttl.Seconds(), 5)

			// An invalid task is refused before anything is written.
			err = reg.Register(ctx, completion.Task{TaskID: "t-invalid", OperationID: "op-invalid"})
			require.ErrorIs(t, err, completion.ErrInvalidTask)
			assert.Equal(t, int64(0), b.Client.Exists(ctx, cfg.MetaPrefix+"t-invalid", cfg.OpPrefix+"op-invalid").Val())
		})
	})
}

func TestRedisRegistryRegisterUsesConfiguredTTL(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	for _, c := range []Client{rdb, regHiddenClient{rdb}} {
		mr.FlushAll()
		reg := newTestRedisRegistry(t, c, Config{TTL: 90 * time.Second})
		require.NoError(t, reg.Register(ctx, pythonTaskWant("t-1", "op-1")))
		assert.Equal(t, 90*time.Second, mr.TTL(DefaultMetaPrefix+"t-1"))
		assert.Equal(t, 90*time.Second, mr.TTL(DefaultOpPrefix+"op-1"))
		mr.FastForward(91 * time.Second)
		_, err := reg.LookupTask(ctx, "op-1", "t-1")
		assert.ErrorIs(t, err, completion.ErrTaskNotFound)
	}
}

func TestRedisRegistrySetStatus(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			meta := reg.Config().MetaPrefix
			pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-1", "op-1"))
			pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-2", "op-2"))

			// Success: running -> completed, TTL kept.
			ok, err := reg.Complete(ctx, "t-1")
			require.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "completed", b.Client.HGet(ctx, meta+"t-1", "status").Val())
			assert.InDelta(t, 3600, b.Client.PTTL(ctx, meta+"t-1").Val().Seconds(), 5)

			// Mismatch: no longer running.
			for _, f := range []func(context.Context, string) (bool, error){reg.Complete, reg.Fail} {
				ok, err = f(ctx, "t-1")
				require.NoError(t, err)
				assert.False(t, ok)
			}
			ok, err = reg.SetStatus(ctx, "t-1", "failed", "running")
			require.NoError(t, err)
			assert.False(t, ok)
			assert.Equal(t, "completed", b.Client.HGet(ctx, meta+"t-1", "status").Val())

			ok, err = reg.Fail(ctx, "t-2")
			require.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "failed", b.Client.HGet(ctx, meta+"t-2", "status").Val())

			// Arbitrary transitions.
			ok, err = reg.SetStatus(ctx, "t-2", "failed", "running")
			require.NoError(t, err)
			assert.True(t, ok)

			// A hash without a status field: nothing matches it.
			require.NoError(t, b.Client.HSet(ctx, meta+"t-nostatus", "task_id", "t-nostatus").Err())
			ok, err = reg.Complete(ctx, "t-nostatus")
			require.NoError(t, err)
			assert.False(t, ok)
			assert.False(t, b.Client.HExists(ctx, meta+"t-nostatus", "status").Val())

			// Missing task: not found, and nothing is created.
			for _, id := range []string{"t-missing", ""} {
				ok, err = reg.Complete(ctx, id)
				require.ErrorIs(t, err, completion.ErrTaskNotFound)
				assert.False(t, ok)
			}
			assert.Equal(t, int64(0), b.Client.Exists(ctx, meta+"t-missing").Val())

			// A key of another type: a Redis error.
			require.NoError(t, b.Client.Set(ctx, meta+"t-string", "x", time.Hour).Err())
			ok, err = reg.Complete(ctx, "t-string")
			require.Error(t, err)
			assert.NotErrorIs(t, err, completion.ErrTaskNotFound)
			assert.Contains(t, err.Error(), "WRONGTYPE")
			assert.False(t, ok)
		})
	})
}

func TestRedisRegistrySetStatusIsAtomic(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		reg := newTestRedisRegistry(t, b.Client, regTestConfig(t, b))
		pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-race", "op-race"))
		var won atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := reg.Complete
				if i%2 == 1 {
					f = reg.Fail
				}
				ok, err := f(ctx, "t-race")
				assert.NoError(t, err)
				if ok {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int32(1), won.Load(), "exactly one transition out of running")
	})
}

func TestRedisRegistryLookupTasks(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			cfg := reg.Config()
			for i := 1; i <= 3; i++ {
				pythonCreateTask(t, b.Client, reg, pythonTaskFields(fmt.Sprintf("t-%d", i), fmt.Sprintf("op-%d", i)))
			}
			require.NoError(t, b.Client.Set(ctx, cfg.OpPrefix+"op-stale", "t-gone", time.Hour).Err())

			keys := []completion.TaskKey{
				{OperationID: "op-1", TaskID: "t-1"},         // index agrees with task id
				{OperationID: "op-2", TaskID: "t-other"},     // index points elsewhere
				{OperationID: "op-unknown", TaskID: "t-3"},   // fall back to task id
				{OperationID: "op-unknown", TaskID: "t-404"}, // neither
				{OperationID: "op-stale", TaskID: "t-1"},     // index to a gone task: fall back
				{OperationID: "op-stale", TaskID: ""},        // index to a gone task, no task id
				{OperationID: "", TaskID: ""},
				{OperationID: "op-1", TaskID: "t-1"}, // a duplicate
				{OperationID: "", TaskID: "t-2"},
			}
			want := []string{"t-1", "t-2", "t-3", "", "t-1", "", "", "t-1", "t-2"}
			tasks, errs := reg.LookupTasks(ctx, keys)
			require.Len(t, tasks, len(keys))
			require.Len(t, errs, len(keys))
			for i, k := range keys {
				if want[i] == "" {
					assert.ErrorIs(t, errs[i], completion.ErrTaskNotFound, "key %+v", k)
					assert.Equal(t, completion.Task{}, tasks[i], "key %+v", k)
					continue
				}
				require.NoError(t, errs[i], "key %+v", k)
				id := want[i]
				assert.Equal(t, pythonTaskWant(id, "op-"+id[2:]), tasks[i], "key %+v", k)
				// The same answer as LookupTask.
				one, err := reg.LookupTask(ctx, k.OperationID, k.TaskID)
				require.NoError(t, err)
				assert.Equal(t, one, tasks[i])
			}

			tasks, errs = reg.LookupTasks(ctx, nil)
			assert.Empty(t, tasks)
			assert.Empty(t, errs)
		})
	})
}

func TestRedisRegistryRoundTrips(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rdb, hook := regCountingClient(t, b)
		cfg := regTestConfig(t, b)
		for _, path := range []string{"script", "pipeline"} {
			t.Run(path, func(t *testing.T) {
				var c Client = rdb
				if path == "pipeline" {
					c = regHiddenClient{rdb}
				}
				reg := newTestRedisRegistry(t, c, cfg)
				for i := 0; i < 60; i++ {
					pythonCreateTask(t, b.Client, reg, pythonTaskFields(fmt.Sprintf("t-%d", i), fmt.Sprintf("op-%d", i)))
				}
				// Batches: at most two round trips, however many keys.
				batch := func(n int, op func(i int) string) []completion.TaskKey {
					keys := make([]completion.TaskKey, n)
					for i := range keys {
						keys[i] = completion.TaskKey{OperationID: op(i), TaskID: fmt.Sprintf("t-%d", i)}
					}
					return keys
				}
				agree := func(i int) string { return fmt.Sprintf("op-%d", i) }
				elsewhere := func(i int) string { return fmt.Sprintf("op-%d", 59-i) }
				unknown := func(i int) string { return fmt.Sprintf("op-none-%d", i) }
				for _, tt := range []struct {
					name string
					op   func(int) string
					want int64
				}{
					{"index agrees with task id", agree, 1},
					{"index points elsewhere", elsewhere, 2},
					{"index unknown", unknown, 1},
				} {
					for _, n := range []int{1, 5, 50} {
						var errs []error
						got := hook.count(func() { _, errs = reg.LookupTasks(ctx, batch(n, tt.op)) })
						for _, err := range errs {
							require.NoError(t, err)
						}
						assert.Equal(t, tt.want, got, "%s, %d keys", tt.name, n)
					}
				}
				assert.Equal(t, int64(0), hook.count(func() { reg.LookupTasks(ctx, []completion.TaskKey{{}, {}}) }), "empty keys")

				// Single lookups.
				_, err := reg.LookupTask(ctx, "op-1", "t-1") // loads the script
				require.NoError(t, err)
				var n int64
				n = hook.count(func() { _, err = reg.LookupTask(ctx, "op-1", "t-1") })
				require.NoError(t, err)
				assert.Equal(t, int64(1), n, "lookup, index agrees")
				n = hook.count(func() { _, err = reg.LookupTask(ctx, "op-1", "t-2") })
				require.NoError(t, err)
				if path == "script" {
					assert.Equal(t, int64(1), n, "lookup, index points elsewhere")
				} else {
					assert.Equal(t, int64(2), n, "lookup, index points elsewhere")
				}
				n = hook.count(func() { _, err = reg.LookupTask(ctx, "op-none", "t-2") })
				require.NoError(t, err)
				assert.Equal(t, int64(1), n, "lookup by task id")

				// Register: one MULTI/EXEC on a single node; the meta
				// transaction and the index on multi-node clients.
				n = hook.count(func() { err = reg.Register(ctx, pythonTaskWant("t-new", "op-new")) })
				require.NoError(t, err)
				if path == "script" {
					assert.Equal(t, int64(1), n, "register")
				} else {
					assert.Equal(t, int64(2), n, "register")
				}
			})
		}
	})
}

func TestRedisRegistryErrors(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		eachRegistryPath(t, b, func(t *testing.T, reg *Registry) {
			ctx := context.Background()
			cfg := reg.Config()
			pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-ok", "op-ok"))
			require.NoError(t, b.Client.Set(ctx, cfg.MetaPrefix+"t-string", "not a hash", time.Hour).Err())
			require.NoError(t, b.Client.HSet(ctx, cfg.OpPrefix+"op-hash", "not", "a string").Err())
			require.NoError(t, b.Client.Set(ctx, cfg.OpPrefix+"op-to-string", "t-string", time.Hour).Err())

			wrongType := []completion.TaskKey{
				{OperationID: "", TaskID: "t-string"},           // meta key holds a string
				{OperationID: "op-unknown", TaskID: "t-string"}, // same, after the index
				{OperationID: "op-hash", TaskID: "t-ok"},        // index holds a hash
				{OperationID: "op-to-string", TaskID: "t-ok"},   // index points to a string
			}
			for _, k := range wrongType {
				_, err := reg.LookupTask(ctx, k.OperationID, k.TaskID)
				require.Error(t, err, "key %+v", k)
				assert.NotErrorIs(t, err, completion.ErrTaskNotFound, "key %+v", k)
				assert.Contains(t, err.Error(), "WRONGTYPE", "key %+v", k)
			}

			// In a batch, a bad key fails alone.
			keys := append([]completion.TaskKey{{OperationID: "op-ok", TaskID: "t-ok"}, {OperationID: "op-none", TaskID: "t-none"}}, wrongType...)
			tasks, errs := reg.LookupTasks(ctx, keys)
			require.NoError(t, errs[0])
			assert.Equal(t, "t-ok", tasks[0].TaskID)
			assert.ErrorIs(t, errs[1], completion.ErrTaskNotFound)
			for i := 2; i < len(keys); i++ {
				require.Error(t, errs[i], "key %+v", keys[i])
				assert.NotErrorIs(t, errs[i], completion.ErrTaskNotFound, "key %+v", keys[i])
				assert.Contains(t, errs[i].Error(), "WRONGTYPE", "key %+v", keys[i])
			}
		})
	})
}

func TestRedisRegistryRedisDown(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, reg *Registry, want error) {
		t.Helper()
		for _, k := range []completion.TaskKey{{OperationID: "op-1", TaskID: "t-1"}, {OperationID: "", TaskID: "t-1"}, {OperationID: "op-1", TaskID: ""}} {
			_, err := reg.LookupTask(ctx, k.OperationID, k.TaskID)
			require.Error(t, err)
			assert.NotErrorIs(t, err, completion.ErrTaskNotFound)
			if want != nil {
				assert.ErrorIs(t, err, want)
			}
		}
		_, errs := reg.LookupTasks(ctx, []completion.TaskKey{{OperationID: "op-1", TaskID: "t-1"}, {OperationID: "op-2", TaskID: ""}, {OperationID: "", TaskID: "t-3"}})
		for _, err := range errs {
			require.Error(t, err)
			assert.NotErrorIs(t, err, completion.ErrTaskNotFound)
		}
		assert.Error(t, reg.Register(ctx, pythonTaskWant("t-1", "op-1")))
		ok, err := reg.Complete(ctx, "t-1")
		assert.False(t, ok)
		require.Error(t, err)
		assert.NotErrorIs(t, err, completion.ErrTaskNotFound)
	}

	t.Run("closed client", func(t *testing.T) {
		rdb := newMini(t)
		require.NoError(t, rdb.Close())
		for _, c := range []Client{rdb, regHiddenClient{rdb}} {
			check(t, newTestRedisRegistry(t, c, Config{}), redis.ErrClosed)
		}
	})
	t.Run("server gone", func(t *testing.T) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = rdb.Close() })
		reg := newTestRedisRegistry(t, rdb, Config{})
		require.NoError(t, reg.Register(ctx, pythonTaskWant("t-1", "op-1")))
		mr.Close()
		check(t, reg, nil)
		check(t, newTestRedisRegistry(t, regHiddenClient{rdb}, Config{}), nil)
	})
	t.Run("failed pipeline", func(t *testing.T) {
		// A pipeline refused as a whole (here by a hook) must not read as
		// "not found".
		rdb := newMini(t)
		reg := newTestRedisRegistry(t, regHiddenClient{rdb}, Config{})
		refused := errors.New("refused")
		rdb.AddHook(regRefusingHook{refused})
		_, err := reg.LookupTask(ctx, "op-1", "t-1")
		assert.ErrorIs(t, err, refused)
		_, errs := reg.LookupTasks(ctx, []completion.TaskKey{{OperationID: "op-1", TaskID: "t-1"}, {OperationID: "", TaskID: "t-2"}})
		for _, err := range errs {
			assert.ErrorIs(t, err, refused)
		}
	})
}

// regRefusingHook fails every pipeline without sending it.
type regRefusingHook struct{ err error }

func (h regRefusingHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h regRefusingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h regRefusingHook) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return h.err }
}

// TestRedisRegistryRing runs the multi-node path against a Ring of two
// servers, so that a task's two keys often live on different nodes.
func TestRedisRegistryRing(t *testing.T) {
	ctx := context.Background()
	m1, m2 := miniredis.RunT(t), miniredis.RunT(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": m1.Addr(), "b": m2.Addr()}})
	t.Cleanup(func() { _ = ring.Close() })
	reg := newTestRedisRegistry(t, ring, Config{})
	require.False(t, reg.single)

	const n = 40
	keys := make([]completion.TaskKey, 0, n)
	for i := 0; i < n; i++ {
		task := completion.Task{TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "tc", OperationID: fmt.Sprintf("op-%d", i)}
		require.NoError(t, reg.Register(ctx, task))
		keys = append(keys, completion.TaskKey{OperationID: task.OperationID, TaskID: fmt.Sprintf("t-%d", n-1-i)})
	}
	require.NotEmpty(t, m1.Keys())
	require.NotEmpty(t, m2.Keys())

	for i := 0; i < n; i++ {
		got, err := reg.LookupTask(ctx, fmt.Sprintf("op-%d", i), "t-unknown")
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("t-%d", i), got.TaskID)
	}
	tasks, errs := reg.LookupTasks(ctx, keys)
	for i := range keys {
		require.NoError(t, errs[i])
		assert.Equal(t, fmt.Sprintf("t-%d", i), tasks[i].TaskID)
	}
	ok, err := reg.Complete(ctx, "t-7")
	require.NoError(t, err)
	assert.True(t, ok)
	got, err := reg.LookupTask(ctx, "op-7", "")
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, got.Status)
}

// TestRedisRegistryCluster runs the multi-node path against a real Redis
// Cluster, where a task's meta hash and operation index usually hash to
// different slots and nodes: nothing may send both keys in one script or
// transaction (CROSSSLOT).
func TestRedisRegistryCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	ctx := context.Background()
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	reg := newTestRedisRegistry(t, cc, Config{})
	require.False(t, reg.single)

	const n = 30
	split := 0
	keys := make([]completion.TaskKey, 0, n)
	for i := 0; i < n; i++ {
		task := completion.Task{TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "tc", OperationID: fmt.Sprintf("op-%d", i)}
		require.NoError(t, reg.Register(ctx, task))
		if cl.MasterFor(DefaultMetaPrefix+task.TaskID) != cl.MasterFor(DefaultOpPrefix+task.OperationID) {
			split++
		}
		keys = append(keys, completion.TaskKey{OperationID: task.OperationID, TaskID: fmt.Sprintf("t-%d", n-1-i)})
	}
	require.Positive(t, split, "no task has its keys on two nodes; the test proves nothing")

	for i := 0; i < n; i++ {
		got, err := reg.LookupTask(ctx, fmt.Sprintf("op-%d", i), "t-unknown")
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("t-%d", i), got.TaskID)
		ttl, err := cc.PTTL(ctx, DefaultOpPrefix+fmt.Sprintf("op-%d", i)).Result()
		require.NoError(t, err)
		assert.InDelta(t, 3600, ttl.Seconds(), 5)
	}
	tasks, errs := reg.LookupTasks(ctx, append(keys, completion.TaskKey{OperationID: "op-none", TaskID: "t-none"}))
	for i := range keys {
		require.NoError(t, errs[i])
		assert.Equal(t, fmt.Sprintf("t-%d", i), tasks[i].TaskID)
	}
	assert.ErrorIs(t, errs[n], completion.ErrTaskNotFound)

	// A task the Python service wrote, through the same cluster.
	f := pythonTaskFields("t-py", "op-py")
	var pairs []any
	for k, v := range f {
		pairs = append(pairs, k, v)
	}
	require.NoError(t, cc.HSet(ctx, DefaultMetaPrefix+"t-py", pairs...).Err())
	require.NoError(t, cc.Expire(ctx, DefaultMetaPrefix+"t-py", 3600*time.Second).Err())
	require.NoError(t, cc.Set(ctx, DefaultOpPrefix+"op-py", "t-py", 3600*time.Second).Err())
	got, err := reg.LookupTask(ctx, "op-py", "")
	require.NoError(t, err)
	assert.Equal(t, pythonTaskWant("t-py", "op-py"), got)

	ok, err := reg.Complete(ctx, "t-py")
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = reg.Fail(ctx, "t-py")
	require.NoError(t, err)
	assert.False(t, ok)
	_, err = reg.Complete(ctx, "t-none")
	assert.ErrorIs(t, err, completion.ErrTaskNotFound)

	require.NoError(t, cc.Set(ctx, DefaultMetaPrefix+"t-string", "x", time.Hour).Err())
	_, err = reg.LookupTask(ctx, "op-none", "t-string")
	require.Error(t, err)
	assert.NotErrorIs(t, err, completion.ErrTaskNotFound)
}

func TestRedisRegistryConcurrentUse(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		reg := newTestRedisRegistry(t, b.Client, regTestConfig(t, b))
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					id := fmt.Sprintf("%d-%d", g, i)
					task := completion.Task{TaskID: "t-" + id, SessionID: "s", ToolCallID: "tc", OperationID: "op-" + id}
					if !assert.NoError(t, reg.Register(ctx, task)) {
						return
					}
					got, err := reg.LookupTask(ctx, "op-"+id, "")
					assert.NoError(t, err)
					assert.Equal(t, task.TaskID, got.TaskID)
					ok, err := reg.Complete(ctx, task.TaskID)
					assert.NoError(t, err)
					assert.True(t, ok)
				}
			}()
		}
		wg.Wait()
	})
}

// TestRegistryServesConsumer runs a Consumer on a Registry: a completion for
// a task the Python service registered reaches the handler with the task,
// which the handler marks completed; one for an unknown task is
// dead-lettered.
func TestRegistryServesConsumer(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.Client)
		reg := newTestRedisRegistry(t, b.Client, Config{MetaPrefix: stream + ":task:meta:", OpPrefix: stream + ":task:op:"})
		pythonCreateTask(t, b.Client, reg, pythonTaskFields("t-py", "op-py"))

		got := make(chan completion.Completion, 10)
		h := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
			got <- *c
			_, err := reg.Complete(ctx, c.Task.TaskID)
			return err
		})
		c, err := completion.NewConsumer(b.Client, reg, h, completion.Config{
			Stream: stream, Group: "g", Block: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()

		_, err = completion.Publish(ctx, b.Client, stream, completion.Message{OperationID: "op-py", TaskID: "t-py", Success: true, Result: []byte(`{"agent":"a-1"}`)})
		require.NoError(t, err)
		select {
		case comp := <-got:
			assert.Equal(t, pythonTaskWant("t-py", "op-py"), comp.Task)
			assert.Equal(t, `{"agent":"a-1"}`, string(comp.Message.Result))
		case <-time.After(10 * time.Second):
			t.Fatal("the handler was not called")
		}
		require.Eventually(t, func() bool {
			task, err := reg.LookupTask(ctx, "op-py", "")
			return err == nil && task.Status == StatusCompleted
		}, 10*time.Second, 10*time.Millisecond, "task not completed")

		_, err = completion.Publish(ctx, b.Client, stream, completion.Message{OperationID: "op-unknown", TaskID: "t-unknown", Error: "boom"})
		require.NoError(t, err)
		dead := completion.DeadLetterStreamFor(stream)
		require.Eventually(t, func() bool { return b.Client.XLen(ctx, dead).Val() == 1 }, 10*time.Second, 10*time.Millisecond, "unknown task not dead-lettered")
		dls, err := b.Client.XRange(ctx, dead, "-", "+").Result()
		require.NoError(t, err)
		assert.Equal(t, completion.ReasonTaskNotFound, dls[0].Values[completion.DeadLetterReasonField])
		cancel()
		require.NoError(t, <-done)
		assert.Empty(t, got, "nothing else reached the handler")
	})
}

// BenchmarkRedisRegistryLookup measures lookups on the shared real Redis.
func BenchmarkRedisRegistryLookup(b *testing.B) {
	ctx := context.Background()
	rdb := redistest.SharedClient(b)
	prefix := uniqueStream(b, rdb)
	cfg := Config{MetaPrefix: prefix + ":task:meta:", OpPrefix: prefix + ":task:op:"}
	const n = 1000
	seed := newTestRedisRegistry(b, rdb, cfg)
	for i := 0; i < n; i++ {
		require.NoError(b, seed.Register(ctx, pythonTaskWant(fmt.Sprintf("t-%d", i), fmt.Sprintf("op-%d", i))))
	}
	for _, path := range []string{"script", "pipeline"} {
		var c Client = rdb
		if path == "pipeline" {
			c = regHiddenClient{rdb}
		}
		reg := newTestRedisRegistry(b, c, cfg)
		for _, tt := range []struct {
			name string
			key  func(i int) (string, string)
		}{
			{"by-op", func(i int) (string, string) { return fmt.Sprintf("op-%d", i%n), fmt.Sprintf("t-%d", i%n) }},
			{"by-task", func(i int) (string, string) { return "op-none", fmt.Sprintf("t-%d", i%n) }},
		} {
			b.Run(path+"/"+tt.name, func(b *testing.B) {
				keys := make([][2]string, n)
				for i := range keys {
					keys[i][0], keys[i][1] = tt.key(i)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					k := keys[i%n]
					if _, err := reg.LookupTask(ctx, k[0], k[1]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("batch-100", func(b *testing.B) {
		reg := newTestRedisRegistry(b, rdb, cfg)
		keys := make([]completion.TaskKey, 100)
		for i := range keys {
			keys[i] = completion.TaskKey{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i)}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, errs := reg.LookupTasks(ctx, keys)
			if errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/key")
	})
}

// uniqueStream returns a key no other test uses, in a hash tag of its own;
// every key it prefixes is deleted when the test ends.
func uniqueStream(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	return redistest.Key(t, rdb, "redisregistry-test:{%s:%08x}")
}

// newMini returns a client to a fresh miniredis.
func newMini(t testing.TB) *redis.Client {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestMain(m *testing.M) {
	os.Exit(redistest.Main(m))
}
