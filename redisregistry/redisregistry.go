// Package redisregistry is a completion.TaskRegistry kept in Redis, in the
// layout of the Python service's task registry, so that Go and Python
// register and look up each other's tasks, and every pod of a service sees
// the same tasks.
//
//	reg, err := redisregistry.New(rdb, redisregistry.Config{})
//	err = reg.Register(ctx, completion.Task{TaskID: "t-1", SessionID: "s", ToolCallID: "tc", OperationID: "op-1"})
//	consumer, err := completion.NewConsumer(rdb, reg, handler, completion.Config{})
package redisregistry

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// Defaults applied by [New] to zero [Config]
// fields. They are the key layout and lifetime of the Python service's task
// registry, so a Go consumer can serve tasks the Python service registered.
const (
	DefaultMetaPrefix = "chat:task:meta:"
	DefaultOpPrefix   = "chat:task:op:"
	DefaultTTL        = time.Hour
)

// Task status values written by [Registry.Register],
// [Registry.Complete] and [Registry.Fail], as the Python service
// writes them.
const (
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Field names of the task meta hash, as the Python service writes them.
const (
	metaFieldTaskID      = "task_id"
	metaFieldSessionID   = "session_id"
	metaFieldUserID      = "user_id"
	metaFieldToolCallID  = "tool_call_id"
	metaFieldToolName    = "tool_name"
	metaFieldOperationID = "operation_id"
	metaFieldStatus      = "status"
	metaFieldCreatedAt   = "created_at"
)

// Client is the set of go-redis commands a [Registry] uses.
// *redis.Client, *redis.ClusterClient, *redis.Ring and redis.UniversalClient
// satisfy it; a test double can embed one of them and override what it
// needs. The registry never closes it.
type Client interface {
	redis.Scripter
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// Config configures a [Registry]. The zero value is the
// Python service's layout: hash "chat:task:meta:<task id>" and string
// "chat:task:op:<operation id>" holding the task id, both expiring after an
// hour. The ids are appended to the prefixes as they are; the braces in the
// Python source's "chat:task:meta:{task_id}" are string interpolation, not a
// Redis Cluster hash tag.
type Config struct {
	// MetaPrefix is prepended to a task id to name the task's meta hash.
	// Default: DefaultMetaPrefix ("chat:task:meta:").
	MetaPrefix string

	// OpPrefix is prepended to an operation id to name the key that holds
	// the operation's task id. It must differ from MetaPrefix.
	// Default: DefaultOpPrefix ("chat:task:op:").
	OpPrefix string

	// RequiredFields are the Task fields Register requires besides TaskID,
	// by their Go names (see completion.Task.Require): give it what the
	// consumers' Config.RequiredTaskFields requires. Default: SessionID and
	// ToolCallID, the Python service's rule.
	RequiredFields []string

	// TTL is how long [Registry.Register] keeps both keys. It must not
	// be negative, and if set, at least a millisecond.
	// Default: DefaultTTL (one hour, as the Python service).
	TTL time.Duration
}

// Registry is a [TaskRegistry] kept in Redis, in the layout of the Python
// service's task registry (see [Config]), so Go and Python can
// register and look up each other's tasks. It is safe for concurrent use.
//
// Round trips. With a *redis.Client (one node, including a Sentinel failover
// client) LookupTask runs one Lua script that reads the operation index and
// the meta hash it points to: one round trip. The script computes the second
// key from the first key's value, which Redis Cluster does not allow for
// keys in other slots, so with any other client (a ClusterClient, a Ring, a
// wrapper) LookupTask pipelines GET of the operation index with HGETALL of
// the message's own task id (one round trip), and spends a second round trip
// only when the index points to another task. [Registry.LookupTasks]
// works that way for every client: at most two round trips per batch,
// whatever its size.
//
// Writes. On a *redis.Client, Register writes both keys and their TTL in one
// MULTI/EXEC. With other clients the two keys may live on different nodes, so
// it writes the meta hash and its TTL in one MULTI/EXEC and then the
// operation index (SET with expiry, atomic by itself). SetStatus is a script
// on the meta key alone and works with every client.
type Registry struct {
	client     Client
	metaPrefix string
	opPrefix   string
	ttl        time.Duration
	required   []string
	single     bool // client is one node: scripts may compute keys, MULTI may span keys
}

// New returns a registry that reads and writes tasks through
// client. Zero fields of cfg take their defaults. It returns an error
// wrapping [completion.ErrInvalidConfig], naming the field, when a field is invalid, and
// one wrapping completion.ErrNilArgument when client is nil (also a typed
// nil). It does not contact Redis.
func New(client Client, cfg Config) (*Registry, error) {
	if isNil(client) {
		return nil, fmt.Errorf("%w: redisregistry.New: the Redis client is nil", completion.ErrNilArgument)
	}
	if cfg.MetaPrefix == "" {
		cfg.MetaPrefix = DefaultMetaPrefix
	}
	if cfg.OpPrefix == "" {
		cfg.OpPrefix = DefaultOpPrefix
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < 0:
		return nil, fmt.Errorf("%w: Config.TTL is %v; it must not be negative (zero means the default)", completion.ErrInvalidConfig, cfg.TTL)
	case cfg.TTL < time.Millisecond:
		return nil, fmt.Errorf("%w: Config.TTL is %v; Redis expiries count whole milliseconds", completion.ErrInvalidConfig, cfg.TTL)
	}
	if cfg.MetaPrefix == cfg.OpPrefix {
		return nil, fmt.Errorf("%w: Config.OpPrefix is %q, the same as MetaPrefix; the keys would collide", completion.ErrInvalidConfig, cfg.OpPrefix)
	}
	single := keys.TopologyOf(client) == keys.SingleNode
	required := cfg.RequiredFields
	if required == nil {
		required = []string{"SessionID", "ToolCallID"}
	} else if err := (completion.Task{TaskID: "-", SessionID: "-", UserID: "-", ToolCallID: "-", ToolName: "-", OperationID: "-"}).Require(required...); err != nil {
		return nil, fmt.Errorf("%w: redisregistry.Config.RequiredFields: %v", completion.ErrInvalidConfig, err)
	}
	return &Registry{
		client:     client,
		metaPrefix: cfg.MetaPrefix,
		opPrefix:   cfg.OpPrefix,
		ttl:        cfg.TTL,
		required:   required,
		single:     single,
	}, nil
}

// MetaKey returns the key of the meta hash of task taskID.
func (r *Registry) MetaKey(taskID string) string { return r.metaPrefix + taskID }

// OpKey returns the key of the operation index of operation operationID,
// which holds its task's id.
func (r *Registry) OpKey(operationID string) string { return r.opPrefix + operationID }

// isNil reports whether c is nil, or a typed nil pointer in an interface.
func isNil(c Client) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// Config returns the registry's configuration with defaults filled in.
func (r *Registry) Config() Config {
	return Config{MetaPrefix: r.metaPrefix, OpPrefix: r.opPrefix, TTL: r.ttl, RequiredFields: r.required}
}

// LookupTask implements [TaskRegistry]: it looks the task up by operation id
// first and, when the operation index is missing or points to a task whose
// meta hash is gone, by task id. An empty id is not looked up. It returns an
// error wrapping [completion.ErrTaskNotFound] when neither is known, and any Redis
// error (including WRONGTYPE for a key of another type) wrapped with the ids.
func (r *Registry) LookupTask(ctx context.Context, operationID, taskID string) (completion.Task, error) {
	if !r.single || operationID == "" {
		tasks, errs := r.LookupTasks(ctx, []completion.TaskKey{{OperationID: operationID, TaskID: taskID}})
		return tasks[0], errs[0]
	}
	keys := []string{r.opPrefix + operationID}
	if taskID != "" {
		keys = append(keys, r.metaPrefix+taskID)
	}
	res, err := scripts.RegistryLookup.Run(ctx, r.client, keys, r.metaPrefix).Slice()
	if err != nil {
		return completion.Task{}, registryLookupError(operationID, taskID, err)
	}
	if len(res) == 0 {
		return completion.Task{}, registryNotFound(operationID, taskID)
	}
	return registryTaskFromPairs(res), nil
}

// LookupTasks implements [BatchTaskRegistry]. It pipelines GET of every
// operation index with HGETALL of every key's own task id (one round trip),
// then HGETALL of the tasks the indexes point to that were not fetched yet
// (a second round trip, skipped when there are none). The result for each
// key is the one [Registry.LookupTask] gives.
func (r *Registry) LookupTasks(ctx context.Context, keys []completion.TaskKey) ([]completion.Task, []error) {
	tasks := make([]completion.Task, len(keys))
	errs := make([]error, len(keys))
	if len(keys) == 0 {
		return tasks, errs
	}
	metas := make(map[string]*redis.MapStringStringCmd, len(keys)) // by task id
	gets := r.fetchFirst(ctx, keys, metas)
	indexed, more := r.indexedTasks(keys, gets, metas, errs)
	// Round trip 2: meta hashes of indexed tasks not fetched yet.
	if len(more) > 0 {
		cmds, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, id := range more {
				metas[id] = p.HGetAll(ctx, r.metaPrefix+id)
			}
			return nil
		})
		registrySettle(err, cmds)
	}
	for i, k := range keys {
		if errs[i] == nil {
			tasks[i], errs[i] = registryResolve(k, metas[indexed[i]], metas[k.TaskID])
		}
	}
	return tasks, errs
}

// fetchFirst is round trip 1: the operation indexes, and the meta hashes of
// the keys' own task ids (into metas), which is where an index points in
// the common case. It returns the GET of each key's index (nil: none).
func (r *Registry) fetchFirst(ctx context.Context, keys []completion.TaskKey, metas map[string]*redis.MapStringStringCmd) []*redis.StringCmd {
	gets := make([]*redis.StringCmd, len(keys))
	cmds, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			if k.OperationID != "" {
				gets[i] = p.Get(ctx, r.opPrefix+k.OperationID)
			}
			if _, ok := metas[k.TaskID]; k.TaskID != "" && !ok {
				metas[k.TaskID] = p.HGetAll(ctx, r.metaPrefix+k.TaskID)
			}
		}
		return nil
	})
	registrySettle(err, cmds)
	return gets
}

// indexedTasks returns the task id each key's operation index points to
// ("" if none), setting errs of failed GETs, and the ids not fetched yet,
// each once (marked in metas).
func (r *Registry) indexedTasks(keys []completion.TaskKey, gets []*redis.StringCmd, metas map[string]*redis.MapStringStringCmd, errs []error) ([]string, []string) {
	indexed := make([]string, len(keys))
	var more []string
	for i, g := range gets {
		if g == nil {
			continue
		}
		id, err := g.Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			errs[i] = registryLookupError(keys[i].OperationID, keys[i].TaskID, err)
			continue
		}
		indexed[i] = id
		if _, ok := metas[id]; id != "" && !ok {
			metas[id] = nil // placeholder until round trip 2, so each id is fetched once
			more = append(more, id)
		}
	}
	return indexed, more
}

// registryResolve picks the task for k from the meta hash its operation index points
// to (byOp, nil if none) or else the one of its own task id (byTask, nil if
// none). An error of either command is the lookup's error.
func registryResolve(k completion.TaskKey, byOp, byTask *redis.MapStringStringCmd) (completion.Task, error) {
	for _, cmd := range [2]*redis.MapStringStringCmd{byOp, byTask} {
		if cmd == nil {
			continue
		}
		m, err := cmd.Result()
		if err != nil {
			return completion.Task{}, registryLookupError(k.OperationID, k.TaskID, err)
		}
		if len(m) > 0 {
			return registryTaskFromMap(m), nil
		}
	}
	return completion.Task{}, registryNotFound(k.OperationID, k.TaskID)
}

// registrySettle makes sure every command of a pipeline that failed as a whole
// carries the failure. Pipelined returns the first command's error (redis.Nil
// included), and go-redis sets a connection error on every command; but if
// the pipeline failed before any command got an error (a hook refusing it,
// say), a command would otherwise look like an empty reply: not found.
func registrySettle(err error, cmds []redis.Cmder) {
	if err == nil {
		return
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return
		}
	}
	for _, c := range cmds {
		c.SetErr(err)
	}
}

// Register writes t in the Python layout: the meta hash, replaced as a
// whole, and, when t.OperationID is set, the operation index, both expiring
// after the configured TTL. An empty Status is written as "running" and a
// zero CreatedAt as the current time. It returns an error wrapping
// [completion.ErrInvalidTask], and writes nothing, when t lacks a field
// Config.RequiredFields requires (see completion.Task.Require), the error
// MemoryRegistry.Register returns for it; and Redis errors wrapped with
// the task id. See [Registry] for how atomic the write is.
//
// Registering a task again under another operation id leaves the old
// operation index in place until it expires; it still points to the task.
func (r *Registry) Register(ctx context.Context, t completion.Task) error {
	if err := t.Require(r.required...); err != nil {
		return err
	}
	if t.Status == "" {
		t.Status = StatusRunning
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	metaKey := r.metaPrefix + t.TaskID
	fields := []any{
		metaFieldTaskID, t.TaskID,
		metaFieldSessionID, t.SessionID,
		metaFieldUserID, t.UserID,
		metaFieldToolCallID, t.ToolCallID,
		metaFieldToolName, t.ToolName,
		metaFieldOperationID, t.OperationID,
		metaFieldStatus, t.Status,
		metaFieldCreatedAt, formatTaskCreatedAt(t.CreatedAt),
	}
	writeIndex := func(p redis.Pipeliner) {
		p.Set(ctx, r.opPrefix+t.OperationID, t.TaskID, r.ttl)
	}
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, metaKey)
		p.HSet(ctx, metaKey, fields...)
		p.PExpire(ctx, metaKey, r.ttl)
		if r.single && t.OperationID != "" {
			writeIndex(p)
		}
		return nil
	})
	if err == nil && !r.single && t.OperationID != "" {
		// The index may live on another node: write it once the meta hash
		// exists, so a reader that finds it finds the hash too.
		_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			writeIndex(p)
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("redisregistry: register task %q: %w", t.TaskID, err)
	}
	return nil
}

// SetStatus sets the status of the task with the given id to `to` if it is
// `from` now, atomically, and reports whether it did. The key's TTL is kept.
// It returns false and an error wrapping [completion.ErrTaskNotFound] if the task's meta
// hash does not exist, and false with no error if the status is another
// (or absent). Redis errors are returned wrapped with the task id.
func (r *Registry) SetStatus(ctx context.Context, taskID, from, to string) (changed bool, err error) {
	if taskID == "" {
		return false, fmt.Errorf("%w: empty task id", completion.ErrTaskNotFound)
	}
	n, err := scripts.RegistryStatus.Run(ctx, r.client, []string{r.metaPrefix + taskID}, from, to).Int64()
	switch {
	case err != nil:
		return false, fmt.Errorf("redisregistry: set status of task %q: %w", taskID, err)
	case n < 0:
		return false, fmt.Errorf("%w: task %q", completion.ErrTaskNotFound, taskID)
	}
	return n == 1, nil
}

// Complete moves the task from "running" to "completed", atomically. It
// returns changed = true when it did; false (with no error) when the task
// was not running any more: completed or failed already (a completion
// delivered twice, say), or in another status, so that the caller acts on
// each completion once. A task that does not exist is an error wrapping
// completion.ErrTaskNotFound. See [Registry.SetStatus].
func (r *Registry) Complete(ctx context.Context, taskID string) (changed bool, err error) {
	return r.SetStatus(ctx, taskID, StatusRunning, StatusCompleted)
}

// Fail moves the task from "running" to "failed", atomically; changed
// reports whether it did, as for [Registry.Complete].
func (r *Registry) Fail(ctx context.Context, taskID string) (changed bool, err error) {
	return r.SetStatus(ctx, taskID, StatusRunning, StatusFailed)
}

func registryNotFound(operationID, taskID string) error {
	return fmt.Errorf("%w: operation %q, task %q", completion.ErrTaskNotFound, operationID, taskID)
}

func registryLookupError(operationID, taskID string, err error) error {
	return fmt.Errorf("redisregistry: look up operation %q, task %q: %w", operationID, taskID, err)
}

// registryTaskFromMap builds a Task from an HGETALL reply. Unknown fields are
// ignored, missing ones left empty.
func registryTaskFromMap(m map[string]string) completion.Task {
	var t completion.Task
	for f, v := range m {
		registrySetField(&t, f, v)
	}
	return t
}

// registryTaskFromPairs builds a Task from a script's flat HGETALL reply (field,
// value, field, value, ...). Elements that are not strings are skipped.
func registryTaskFromPairs(res []any) completion.Task {
	var t completion.Task
	for i := 0; i+1 < len(res); i += 2 {
		f, ok1 := res[i].(string)
		v, ok2 := res[i+1].(string)
		if ok1 && ok2 {
			registrySetField(&t, f, v)
		}
	}
	return t
}

func registrySetField(t *completion.Task, field, value string) {
	switch field {
	case metaFieldTaskID:
		t.TaskID = value
	case metaFieldSessionID:
		t.SessionID = value
	case metaFieldUserID:
		t.UserID = value
	case metaFieldToolCallID:
		t.ToolCallID = value
	case metaFieldToolName:
		t.ToolName = value
	case metaFieldOperationID:
		t.OperationID = value
	case metaFieldStatus:
		t.Status = value
	case metaFieldCreatedAt:
		t.CreatedAt = parseTaskCreatedAt(value)
	}
}

// registryTimeLayouts are the forms of Python's datetime.isoformat() (and what
// datetime.fromisoformat reads back): with or without fractional seconds
// (time.Parse accepts any fraction after the seconds), with a UTC offset or
// "Z", or naive, with a "T" or a space between date and time.
var registryTimeLayouts = [...]string{
	"2006-01-02T15:04:05Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
}

// parseTaskCreatedAt parses a created_at value. A naive time is taken as UTC;
// the result is in UTC. An unparsable value gives the zero time.
func parseTaskCreatedAt(s string) time.Time {
	for _, layout := range registryTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// formatTaskCreatedAt writes t as Python's datetime.now(timezone.utc).isoformat()
// does: UTC, microseconds, "+00:00".
func formatTaskCreatedAt(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000-07:00")
}
