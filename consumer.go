package completion

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/clock"
	"github.com/streamrelay/completion/internal/engine"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/ownership"
)

// RedisClient is the set of go-redis commands a [Consumer] uses.
// *redis.Client, *redis.ClusterClient, *redis.Ring and redis.UniversalClient
// satisfy it; a test double can embed one of them and override what it
// needs. The consumer never closes it.
//
// Three things depend on what the client can do, which the consumer finds
// out from its methods, so that a wrapper embedding a client keeps them: a
// client with Conn() (a *redis.Client, also Sentinel's failover client) or
// MasterForKey (a *redis.ClusterClient) gets the dedicated, interruptible
// blocking read (with others, shutdown waits up to Config.Block); when it
// also tells its Options() (a *redis.Client, or a cluster's node clients),
// that read runs on a connection of the consumer's own, dialled with those
// options, whose replies are capped at the read-ahead budget (see
// Config.MaxReadAheadBytes; the client's hooks do not see those reads);
// and a single-node client, or keys in one cluster slot, get the atomic
// one-script move to the dead-letter stream (otherwise: dead letter first,
// acknowledgement second).
type RedisClient interface {
	redis.Scripter
	XGroupCreateMkStream(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XInfoGroups(ctx context.Context, stream string) *redis.XInfoGroupsCmd
	XReadGroup(ctx context.Context, a *redis.XReadGroupArgs) *redis.XStreamSliceCmd
	XAutoClaimWithDeleted(ctx context.Context, a *redis.XAutoClaimArgs) *redis.XAutoClaimWithDeletedCmd
	XPendingExt(ctx context.Context, a *redis.XPendingExtArgs) *redis.XPendingExtCmd
	XClaim(ctx context.Context, a *redis.XClaimArgs) *redis.XMessageSliceCmd
	XAck(ctx context.Context, stream, group string, ids ...string) *redis.IntCmd
	XRange(ctx context.Context, stream, start, stop string) *redis.XMessageSliceCmd
	XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd
	Exists(ctx context.Context, keys ...string) *redis.IntCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	ZRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

var _ engine.Client = RedisClient(nil)

// State is where a [Consumer] is in its life. Read it with [Consumer.State],
// e.g. for a health check.
type State int32

const (
	// StateIdle: Run has not been called, or has returned.
	StateIdle State = State(engine.StateIdle)
	// StateStarting: Run is creating the group and reading the consumer's
	// own pending entries.
	StateStarting State = State(engine.StateStarting)
	// StateRunning: reading and handling entries.
	StateRunning State = State(engine.StateRunning)
	// StateDegraded: Redis calls are failing; the consumer is backing off
	// and will resume on its own, and is running again as soon as a call
	// succeeds. [Stats.LastError] says why.
	StateDegraded State = State(engine.StateDegraded)
	// StateStopping: Run's context was cancelled; in-flight handlers are
	// finishing.
	StateStopping State = State(engine.StateStopping)
)

// String returns the state's name in lower case.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateDegraded:
		return "degraded"
	case StateStopping:
		return "stopping"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Stats are a [Consumer]'s counters since it was created. All counts are
// cumulative over every Run, except InFlight and Partitions.
type Stats struct {
	// Delivered counts entries handed to processing (decoded or not),
	// redeliveries included.
	Delivered int64
	// Handled counts handler calls that returned nil: the completion was
	// handed over, whether its operation succeeded or failed.
	Handled int64
	// Failed counts handler calls that returned an error or panicked, and
	// registry lookups that failed.
	Failed int64
	// Retried counts redeliveries scheduled after a failure.
	Retried int64
	// DeadLettered counts entries moved to the dead-letter stream.
	DeadLettered int64
	// Dropped counts entries acknowledged without handling under
	// NotFoundDrop.
	Dropped int64
	// Duplicates counts redeliveries skipped by duplicate suppression.
	Duplicates int64
	// Reclaimed counts entries taken over from other consumers (or from
	// this one's earlier life) with XAUTOCLAIM or a read of its own
	// pending list.
	Reclaimed int64
	// DeletedWhilePending counts entries that were trimmed or deleted from
	// the stream while pending and are lost: not held by this consumer
	// (Redis drops them from the pending list and their content is gone;
	// one another consumer holds may yet be completed by it), or held and
	// let go unhandled (at shutdown). One this consumer holds is handled,
	// and retried, from memory.
	DeletedWhilePending int64
	// LeasesLost counts entries this consumer held that another consumer
	// took over, each once: those not started yet are not handled here;
	// those being handled have their context cancelled (their handler may
	// then have run twice). It is a lower bound: a takeover whose new owner
	// acknowledged first goes unseen.
	LeasesLost int64
	// RedisErrors counts failed Redis calls.
	RedisErrors int64
	// InFlight is the number of entries held right now: queued, being
	// handled, or waiting for a retry or their acknowledgement.
	InFlight int64
	// Partitions is the number of streams this consumer reads right now:
	// 1 for an unpartitioned stream while Run runs; with Config.Partitions
	// > 1, the partitions it owns, counting those it is handing back (see
	// Config.Partitions). Zero when Run is not running.
	Partitions int
	// LastError is the most recent Redis error, or empty.
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
}

// Consumer reads completions from a stream through a consumer group and
// hands each to a [CompletionHandler]. Create one with [NewConsumer] and
// call [Consumer.Run]. Its methods are safe for concurrent use.
type Consumer struct {
	client RedisClient
	proc   processor
	cfg    Config
	log    *slog.Logger

	explicitDeadLetter bool // Config.DeadLetterStream was set by the caller
	running            atomic.Bool
	stats              engine.Stats

	mu     sync.Mutex
	single *engine.Engine         // the engine of an unpartitioned stream, while Run runs
	coord  *ownership.Coordinator // of a partitioned stream, while Run runs

	logMu   sync.Mutex
	lastLog map[string]time.Time

	// For tests: the clock, and a hook called after each pass of a
	// background job.
	clock  clock.Clock
	signal func(job string)
}

// NewConsumer returns a Consumer that reads cfg.Stream as cfg.Consumer in
// cfg.Group, looks each completion's task up in registry and passes it to
// handler. It returns an error wrapping [ErrNilArgument] naming the argument
// when client, registry or handler is nil (also a typed nil, such as a nil
// *redis.Client), and one wrapping [ErrInvalidConfig] that names the field
// when cfg holds a value that cannot work. It does not contact Redis; Run
// does.
//
// The consumer never closes client.
func NewConsumer(client RedisClient, registry TaskRegistry, handler CompletionHandler, cfg Config) (*Consumer, error) {
	for _, a := range []struct {
		name string
		v    any
	}{{"client", client}, {"registry", registry}, {"handler", handler}} {
		if isNil(a.v) {
			return nil, fmt.Errorf("%w: NewConsumer: the %s is nil", ErrNilArgument, a.name)
		}
	}
	explicitDL := cfg.DeadLetterStream != ""
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		explicitDeadLetter: explicitDL,
		client:             client,
		cfg:                cfg,
		clock:              clock.Real,
		log: cfg.Logger.With(
			slog.String("stream", cfg.Stream),
			slog.String("group", cfg.Group),
			slog.String("consumer", cfg.Consumer)),
	}
	c.proc = processor{c: c, registry: registry, handler: handler}
	return c, nil
}

// isNil reports whether v is nil or holds a nil pointer, map, func, slice,
// channel or interface.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// Config returns the consumer's configuration with defaults filled in.
func (c *Consumer) Config() Config { return c.cfg }

// State returns the consumer's current state. With several partitions it is
// the least healthy of the partition coordination's and the partitions'
// own (stopping, then degraded, then starting, then running); a partition
// being handed back does not count as stopping, nor does owning none.
func (c *Consumer) State() State {
	c.mu.Lock()
	single, coord := c.single, c.coord
	c.mu.Unlock()
	switch {
	case single != nil:
		return State(single.State())
	case coord == nil:
		return StateIdle
	}
	worst := coord.State()
	if worst == 0 {
		return StateIdle
	}
	rank := map[engine.State]int{engine.StateRunning: 0, engine.StateStarting: 1, engine.StateDegraded: 2, engine.StateStopping: 3}
	for _, e := range coord.Engines() {
		if s := e.State(); s != engine.StateStopping && rank[s] > rank[worst] {
			worst = s // a partition handed back is not the consumer stopping
		}
	}
	return State(worst)
}

// engines returns the engines running now.
func (c *Consumer) engines() []*engine.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.single != nil:
		return []*engine.Engine{c.single}
	case c.coord != nil:
		return c.coord.Engines()
	}
	return nil
}

// Stats returns a snapshot of the consumer's counters.
func (c *Consumer) Stats() Stats {
	s := &c.stats
	lastErr, lastAt := s.LastError()
	var inFlight int64
	engines := c.engines()
	for _, e := range engines {
		inFlight += e.InFlight()
	}
	return Stats{
		Delivered:           s.Delivered.Load(),
		Handled:             s.Handled.Load(),
		Failed:              s.Failed.Load(),
		Retried:             s.Retried.Load(),
		DeadLettered:        s.DeadLettered.Load(),
		Dropped:             s.Dropped.Load(),
		Duplicates:          s.Duplicates.Load(),
		Reclaimed:           s.Reclaimed.Load(),
		DeletedWhilePending: s.DeletedWhilePending.Load(),
		LeasesLost:          s.LeasesLost.Load(),
		RedisErrors:         s.RedisErrors.Load(),
		InFlight:            inFlight,
		Partitions:          len(engines),
		LastError:           lastErr,
		LastErrorAt:         lastAt,
	}
}

// Run consumes until ctx is cancelled or Redis refuses the consumer for good,
// and blocks until then.
//
// It creates the group if needed (from the start of the stream), first
// re-reads the entries still pending for this consumer, then reads new
// entries and, every Config.ClaimInterval, takes over entries other
// consumers left pending for longer than Config.ClaimMinIdle. Redis errors
// are retried with capped, jittered backoff; a deleted stream or group is
// recreated. With Config.Partitions > 1 it does this for each partition it
// owns, taking and handing back partitions as consumers come and go (see
// Config.Partitions), and at shutdown hands back all of them.
//
// When ctx is cancelled Run stops reading, gives handlers that are running
// up to Config.ShutdownTimeout to finish, acknowledges those that
// succeeded, and leaves everything else pending for a later delivery. It
// returns at most ShutdownTimeout + 7 s after ctx is cancelled, whatever
// Redis does: ShutdownTimeout for the handlers, 2 s for them to react to
// their cancelled context, 5 s for the last acknowledgements. When it
// returns, every goroutine it started has exited, except, when Redis does
// not answer, Redis calls still under way then, which end by the client's
// own timeouts (ReadTimeout, DialTimeout, MaxRetries; set
// ContextTimeoutEnabled on the client to have them end at Run's bound) and
// acknowledge nothing unfinished. It returns an error wrapping
// [ErrShutdownTimeout] if handlers ignore the cancellation of their
// context, [ErrStartTimeout] if it could not reach Redis at the start
// within Config.StartTimeout, [ErrRedisFatal] if Redis refuses a command for
// good (e.g. a missing ACL permission), and [ErrRunning] if the consumer is
// already running.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	c.checkClient()
	live := &engine.LiveSet{}
	if c.cfg.Partitions > 1 {
		coord := ownership.New(ownership.Params{
			Client: c.client, Stream: c.cfg.Stream, Group: c.cfg.Group, Consumer: c.cfg.Consumer,
			Partitions: c.cfg.Partitions, Concurrency: c.cfg.Concurrency,
			TTL: c.cfg.ClaimMinIdle, LeaseInterval: c.cfg.LeaseInterval, StartTimeout: c.startTimeout(),
			Log: c.log, Stats: &c.stats, Observe: c.observe, Clock: c.clock, Live: live,
			ErrRedisFatal: ErrRedisFatal, ErrStartTimeout: ErrStartTimeout, ErrShutdownTimeout: ErrShutdownTimeout,
			NewEngine: func(i int, sem chan struct{}) *engine.Engine {
				return c.newEngine(i, sem, live)
			},
		})
		c.mu.Lock()
		c.coord = coord
		c.mu.Unlock()
		defer func() { c.mu.Lock(); c.coord = nil; c.mu.Unlock() }()
		return coord.Run(ctx)
	}
	e := c.newEngine(-1, nil, live)
	c.mu.Lock()
	c.single = e
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.single = nil; c.mu.Unlock() }()
	return e.Run(ctx)
}

// startTimeout is Config.StartTimeout as the engines take it: 0 for none.
func (c *Consumer) startTimeout() time.Duration {
	if c.cfg.StartTimeout == NoStartTimeout {
		return 0
	}
	return c.cfg.StartTimeout
}

// newEngine returns the engine of partition i (-1: the unpartitioned
// stream), sharing the handler slots sem, if any.
func (c *Consumer) newEngine(i int, sem chan struct{}, live *engine.LiveSet) *engine.Engine {
	cfg := c.cfg
	p := engine.Params{
		Client: c.client, Stream: cfg.Stream, DeadLetterStream: cfg.DeadLetterStream, Group: cfg.Group, Consumer: cfg.Consumer,
		Settings: engine.Settings{
			Block: cfg.Block, ClaimMinIdle: cfg.ClaimMinIdle, ClaimInterval: cfg.ClaimInterval, LeaseInterval: cfg.LeaseInterval,
			AckDelay: cfg.AckDelay, ShutdownTimeout: cfg.ShutdownTimeout, ErrorBackoff: cfg.ErrorBackoff,
			MaxErrorBackoff: cfg.MaxErrorBackoff, StaleConsumerAge: cfg.StaleConsumerAge,
			BatchSize: cfg.BatchSize, Concurrency: cfg.Concurrency, MaxPayloadBytes: cfg.MaxPayloadBytes,
			MaxIDBytes: cfg.MaxIDBytes, MaxErrorBytes: cfg.MaxErrorBytes, MaxReadAheadBytes: cfg.MaxReadAheadBytes,
			DeadLetterMaxLen: cfg.DeadLetterMaxLen, OrderByTask: cfg.OrderByTask, StartTimeout: c.startTimeout(),
		},
		Processor: &c.proc, Stats: &c.stats, Log: c.log, Clock: c.clock, Sem: sem,
		Live: live, Heartbeat: i < 0, MembersKey: keys.Members(cfg.Stream, cfg.Group),
		ErrRedisFatal: ErrRedisFatal, ErrStartTimeout: ErrStartTimeout, ErrShutdownTimeout: ErrShutdownTimeout,
		Signal: c.signal,
	}
	if cfg.Observer != nil {
		p.Observe = c.observe
	}
	if i >= 0 {
		p.Stream = keys.PartitionStream(cfg.Stream, i, cfg.Partitions)
		if !c.explicitDeadLetter {
			p.DeadLetterStream = keys.DeadLetterStream(p.Stream)
		}
		p.Log = c.log.With(slog.String("partition", p.Stream))
		p.Adopt, p.StartTimeout = true, 0
	}
	return engine.New(p)
}

// checkClient says what the client lacks: a pool too small for the
// consumer (its acker, reclaimer, leaser and retries need a few
// connections, and reads of the own pending list; handlers' own Redis calls
// come on top; the blocking reads of a client that tells its options run
// on connections of the consumer's own), or the interruptible read.
func (c *Consumer) checkClient() {
	var size int
	switch cl := c.client.(type) {
	case interface{ Options() *redis.Options }:
		size = cl.Options().PoolSize
	case interface{ Options() *redis.ClusterOptions }:
		size = cl.Options().PoolSize
	}
	need := 4
	if size > 0 && size < need {
		c.log.Warn("the Redis client's pool may be too small for this consumer; raise its PoolSize",
			slog.Int("pool_size", size), slog.Int("at_least", need))
	}
	switch c.client.(type) {
	case interface{ Conn() *redis.Conn }, interface {
		MasterForKey(context.Context, string) (*redis.Client, error)
	}:
	default:
		c.log.Info("the Redis client offers no dedicated connection (it has neither Conn nor MasterForKey): a blocked read cannot be interrupted, so shutdown may wait up to Block",
			slog.Duration("block", c.cfg.Block))
	}
}

// allowLog reports whether a log line for key may be written now, at most
// once every 10 s per key.
func (c *Consumer) allowLog(key string) bool {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	if c.lastLog == nil {
		c.lastLog = make(map[string]time.Time)
	}
	now := c.clock.Now()
	if last, ok := c.lastLog[key]; ok && now.Sub(last) < 10*time.Second {
		return false
	}
	c.lastLog[key] = now
	return true
}
