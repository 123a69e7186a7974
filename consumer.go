package completion

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is where a [Consumer] is in its life. Read it with [Consumer.State],
// e.g. for a health check.
type State int32

const (
	// StateIdle: Run has not been called, or has returned.
	StateIdle State = iota
	// StateStarting: Run is creating the group and reading the consumer's
	// own pending entries.
	StateStarting
	// StateRunning: reading and handling entries.
	StateRunning
	// StateDegraded: Redis calls are failing; the consumer is backing off
	// and will resume on its own. [Stats.LastError] says why.
	StateDegraded
	// StateStopping: Run's context was cancelled; in-flight handlers are
	// finishing.
	StateStopping
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
// cumulative over every Run, except InFlight.
type Stats struct {
	// Delivered counts entries handed to processing (decoded or not),
	// redeliveries included.
	Delivered int64
	// Succeeded counts handler calls that returned nil.
	Succeeded int64
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
	// the stream while pending and not held by this consumer; Redis drops
	// them from the pending list and their content is gone. (One that
	// another consumer still held in memory may yet be completed by it.)
	DeletedWhilePending int64
	// LeasesLost counts entries this consumer was handling that another
	// consumer took over (its handler may then run twice). It is a lower
	// bound: a takeover whose new owner acknowledged first goes unseen.
	LeasesLost int64
	// RedisErrors counts failed Redis calls.
	RedisErrors int64
	// InFlight is the number of entries held right now: queued, being
	// handled, or waiting for their acknowledgement.
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

type counters struct {
	delivered, succeeded, failed, retried, deadLettered, dropped, duplicates,
	reclaimed, deletedWhilePending, leasesLost, redisErrors atomic.Int64

	mu          sync.Mutex
	lastError   string
	lastErrorAt time.Time
}

// Consumer reads completions from a stream through a consumer group and
// hands each to a [CompletionHandler]. Create one with [NewConsumer] and
// call [Consumer.Run]. Its methods are safe for concurrent use.
type Consumer struct {
	client   RedisClient
	registry TaskRegistry
	handler  CompletionHandler
	cfg      Config
	log      *slog.Logger

	explicitDeadLetter bool // Config.DeadLetterStream was set by the caller

	running atomic.Bool
	stats   counters

	mu   sync.Mutex
	runs []*run // one per partition read, while Run runs
	// ownState is the partition coordinator's State while Run runs on a
	// partitioned stream (see ownership.go), else 0.
	ownState atomic.Int32
}

// NewConsumer returns a Consumer that reads cfg.Stream as cfg.Consumer in
// cfg.Group, looks each completion's task up in registry and passes it to
// handler. It returns an error wrapping [ErrInvalidConfig] that names the
// field when cfg holds a value that cannot work, and an error when client,
// registry or handler is nil. It does not contact Redis; Run does.
//
// The consumer never closes client.
func NewConsumer(client RedisClient, registry TaskRegistry, handler CompletionHandler, cfg Config) (*Consumer, error) {
	switch {
	case client == nil:
		return nil, fmt.Errorf("%w: NewConsumer: client is nil", ErrInvalidConfig)
	case registry == nil:
		return nil, fmt.Errorf("%w: NewConsumer: registry is nil", ErrInvalidConfig)
	case handler == nil:
		return nil, fmt.Errorf("%w: NewConsumer: handler is nil", ErrInvalidConfig)
	}
	explicitDL := cfg.DeadLetterStream != ""
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Consumer{
		explicitDeadLetter: explicitDL,
		client:             client,
		registry:           registry,
		handler:            handler,
		cfg:                cfg,
		log: cfg.Logger.With(
			slog.String("stream", cfg.Stream),
			slog.String("group", cfg.Group),
			slog.String("consumer", cfg.Consumer)),
	}, nil
}

// Config returns the consumer's configuration with defaults filled in.
func (c *Consumer) Config() Config { return c.cfg }

// State returns the consumer's current state. With several partitions it is
// the least healthy of the partition coordination's and the partitions'
// own (stopping, then degraded, then starting, then running); a partition
// being handed back does not count as stopping, nor does owning none.
func (c *Consumer) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	own := State(c.ownState.Load())
	if len(c.runs) == 0 && own == 0 {
		return StateIdle
	}
	worst := StateRunning
	rank := map[State]int{StateRunning: 0, StateStarting: 1, StateDegraded: 2, StateStopping: 3}
	if own != 0 {
		worst = own
	}
	for _, r := range c.runs {
		s := State(r.state.Load())
		if own != 0 && s == StateStopping {
			continue // a partition handed back, not the consumer stopping
		}
		if rank[s] > rank[worst] {
			worst = s
		}
	}
	return worst
}

// Stats returns a snapshot of the consumer's counters.
func (c *Consumer) Stats() Stats {
	s := &c.stats
	s.mu.Lock()
	lastErr, lastAt := s.lastError, s.lastErrorAt
	s.mu.Unlock()
	var inFlight int64
	c.mu.Lock()
	for _, r := range c.runs {
		inFlight += r.inFlight.Load()
	}
	partitions := len(c.runs)
	c.mu.Unlock()
	return Stats{
		Delivered:           s.delivered.Load(),
		Succeeded:           s.succeeded.Load(),
		Failed:              s.failed.Load(),
		Retried:             s.retried.Load(),
		DeadLettered:        s.deadLettered.Load(),
		Dropped:             s.dropped.Load(),
		Duplicates:          s.duplicates.Load(),
		Reclaimed:           s.reclaimed.Load(),
		DeletedWhilePending: s.deletedWhilePending.Load(),
		LeasesLost:          s.leasesLost.Load(),
		RedisErrors:         s.redisErrors.Load(),
		InFlight:            inFlight,
		Partitions:          partitions,
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
// returns nil once every goroutine it started has exited: at most
// ShutdownTimeout, plus 2 s for handlers to react to their cancelled
// context, plus 5 s for the last acknowledgements, after ctx is cancelled.
// It returns an error wrapping [ErrShutdownTimeout] if handlers ignore the
// cancellation of their context, [ErrRedisFatal] if Redis refuses a command for good (e.g. a
// missing ACL permission), and [ErrRunning] if the consumer is already
// running.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	c.checkPoolSize()
	if c.cfg.Partitions > 1 {
		return c.runPartitioned(ctx)
	}
	r := newRun(c, c.cfg)
	c.addRun(r)
	defer c.removeRun(r)
	return r.run(ctx)
}

// addRun and removeRun keep the set of runs that State and Stats look at.
func (c *Consumer) addRun(r *run) {
	c.mu.Lock()
	c.runs = append(c.runs, r)
	c.mu.Unlock()
}

func (c *Consumer) removeRun(r *run) {
	c.mu.Lock()
	if i := slices.Index(c.runs, r); i >= 0 {
		c.runs = slices.Delete(c.runs, i, i+1)
	}
	c.mu.Unlock()
}

// noteRedisError records a failed Redis call for Stats.
func (c *Consumer) noteRedisError(err error) {
	c.stats.redisErrors.Add(1)
	c.stats.mu.Lock()
	c.stats.lastError = err.Error()
	c.stats.lastErrorAt = time.Now()
	c.stats.mu.Unlock()
}

// checkPoolSize warns when the client's connection pool cannot serve the
// consumer: it holds a dedicated connection per partition for the blocking
// reads, and its acker, reclaimer, leaser and retries need a few more
// (handlers' own Redis calls come on top). A starved pool shows as pool
// timeouts.
func (c *Consumer) checkPoolSize() {
	var size int
	switch cl := c.client.(type) {
	case *redis.Client:
		size = cl.Options().PoolSize
	case *redis.ClusterClient:
		size = cl.Options().PoolSize
	default:
		return
	}
	need := c.cfg.Partitions + 4
	if size > 0 && size < need {
		c.log.Warn("the Redis client's pool may be too small for this consumer; raise its PoolSize",
			slog.Int("pool_size", size), slog.Int("at_least", need), slog.Int("partitions", c.cfg.Partitions))
	}
}
