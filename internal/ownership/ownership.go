// Package ownership shares the partitions of a stream out among the
// consumers of a group, so that each partition is read by one consumer at a
// time, its owner, and a task's completions (which Publish puts in one
// partition) are handled in order however many consumers run. It drives one
// engine per owned partition.
//
// The consumers coordinate through two kinds of keys:
//
//   - the member set, keys.Members(stream, group), a sorted set in which
//     each running consumer refreshes its name every LeaseInterval, scored
//     with the Redis server's clock; names silent for the TTL
//     (ClaimMinIdle) drop out;
//   - one owner key per partition, keys.Owner(...), holding the owner's
//     name with a time-to-live of TTL that the owner renews every
//     LeaseInterval. It shares the partition's hash tag, so it lives on the
//     partition's node.
//
// Each consumer aims at its fair share, ceil(partitions / members): below
// it, it takes partitions whose owner key is free; above it, it hands
// partitions back: it stops reading them, lets their running handlers
// finish and acknowledges them, and only then deletes the owner key. A new
// owner first takes over everything the group still has pending in the
// partition (left behind by a previous owner) and handles it in stream
// order before it reads new entries (engine Params.Adopt). An owner that has
// not renewed its key for half of TTL stops reading the partition, and a
// watchdog timer per partition, independent of any Redis call, cuts its
// handlers a quarter of TTL before the key can expire; the keys of
// partitions being handed back, also at shutdown, are renewed until their
// handlers have finished. One semaphore of Concurrency slots is shared by
// the engines of all owned partitions.
package ownership

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamrelay/completion/internal/clock"
	"github.com/streamrelay/completion/internal/engine"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// Params are everything a coordinator is given.
type Params struct {
	Client                  engine.Client
	Stream, Group, Consumer string
	Partitions, Concurrency int
	TTL, LeaseInterval      time.Duration
	StartTimeout            time.Duration // bound on the first heartbeat; 0: none
	Log                     *slog.Logger
	Stats                   *engine.Stats
	Observe                 func(engine.Event) // nil: none
	Clock                   clock.Clock
	Live                    *engine.LiveSet
	ErrRedisFatal           error
	ErrStartTimeout         error
	ErrShutdownTimeout      error
	// NewEngine returns the engine of partition i, which takes over the
	// partition's leftovers first and shares the handler slots sem.
	NewEngine func(i int, sem chan struct{}) *engine.Engine
}

// Coordinator runs the partitions a consumer owns. Run it once.
type Coordinator struct {
	p       Params
	members string
	parts   map[int]*owned // Run's goroutine only
	exited  chan struct{}  // nudged when a partition's engine returns
	start   int            // where this consumer starts looking for free partitions
	sem     chan struct{}
	// blocked holds partitions whose handlers did not stop when their
	// engine ended: this consumer does not take them again before the time
	// given, when their owner key has expired.
	blocked map[int]time.Time
	leaked  error // the first ErrShutdownTimeout of a partition's engine

	state atomic.Int32 // the coordination's own engine.State

	mu      sync.Mutex
	engines []*engine.Engine // of the partitions owned, for State and Stats
}

// owned is a partition this consumer owns, or is handing back.
type owned struct {
	index   int
	key     string // owner key
	eng     *engine.Engine
	cancel  context.CancelFunc
	done    chan struct{} // closed when the engine has returned; err is set then
	err     error
	renewed time.Time // when the last successful renewal was sent
	leaving bool      // stopped: its key is released once the engine has returned
	lost    bool      // someone else owns the key: do not release it
	// watchdog cuts the engine's handlers and stops it at renewed + ttl -
	// ttl/4, unless a renewal resets it first.
	watchdog clock.Timer
}

// New returns a coordinator of p.
func New(p Params) *Coordinator {
	if p.Clock == nil {
		p.Clock = clock.Real
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(p.Consumer))
	return &Coordinator{
		p:       p,
		members: keys.Members(p.Stream, p.Group),
		parts:   make(map[int]*owned),
		exited:  make(chan struct{}, 1),
		start:   int(h.Sum32() % uint32(p.Partitions)),
		sem:     make(chan struct{}, p.Concurrency),
		blocked: make(map[int]time.Time),
	}
}

// State returns the coordination's own state (0 when not running).
func (c *Coordinator) State() engine.State { return engine.State(c.state.Load()) }

// Engines returns the engines of the partitions owned now.
func (c *Coordinator) Engines() []*engine.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.engines)
}

// Run coordinates until ctx is cancelled or a fatal error, then hands every
// partition back and returns when every engine has returned.
func (c *Coordinator) Run(ctx context.Context) error {
	c.state.Store(int32(engine.StateStarting))
	defer c.state.Store(0)
	var startBy time.Time
	if c.p.StartTimeout > 0 {
		startBy = c.p.Clock.Now().Add(c.p.StartTimeout)
	}
	// The first fatal error of a partition's engine, or of the
	// coordination, ends Run.
	var fatal error
	tick := c.p.Clock.NewTimer(0)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C():
			tick.Reset(c.p.LeaseInterval)
		case <-c.exited:
		}
		if fatal = c.step(ctx, startBy); fatal != nil {
			break
		}
		if c.State() == engine.StateRunning {
			startBy = time.Time{}
		}
	}
	c.state.Store(int32(engine.StateStopping))
	err := c.shutdown()
	switch {
	case fatal != nil:
		return fatal
	case err != nil:
		return err
	}
	return c.leaked
}

// callTimeout bounds each coordination call (a heartbeat, an acquisition, a
// release), and twice that the renewals of one step together, so that a
// hung Redis cannot hold the coordinator up.
func (c *Coordinator) callTimeout() time.Duration {
	return max(c.p.LeaseInterval/4, 50*time.Millisecond)
}

// untilCut returns how long from now a partition whose ownership was last
// renewed at renewed may keep its handlers running: until a quarter of the
// TTL before the ownership can expire, which leaves handlers that honour
// their context time to return.
func (c *Coordinator) untilCut(renewed time.Time) time.Duration {
	return renewed.Add(c.p.TTL - c.p.TTL/4).Sub(c.p.Clock.Now())
}

// step does one round of coordination: it collects partitions whose engine
// has returned, renews what it owns, announces this consumer, and takes or
// hands back partitions to reach its fair share. It returns a fatal error.
func (c *Coordinator) step(ctx context.Context, startBy time.Time) error {
	if err := c.reap(); err != nil {
		return err
	}
	if err := c.renew(ctx); err != nil {
		return err
	}
	ttlMS := c.p.TTL.Milliseconds()
	// At the start the heartbeat gets the client's own time: a client
	// dialling a wrong address says why only after its own retries, and a
	// deadline would hide that behind "context deadline exceeded".
	hctx, cancel := context.WithTimeout(ctx, c.callTimeout())
	if !startBy.IsZero() {
		cancel()
		hctx, cancel = context.WithCancel(ctx)
	}
	names, err := scripts.Heartbeat.Run(hctx, c.p.Client, []string{c.members}, c.p.Consumer, ttlMS).StringSlice()
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		if engine.IsFatal(err) {
			return fmt.Errorf("%w: announcing consumer %q in %s: %w", c.p.ErrRedisFatal, c.p.Consumer, c.members, err)
		}
		if !startBy.IsZero() && !c.p.Clock.Now().Before(startBy) {
			return fmt.Errorf("%w: the consumer could not reach Redis to join group %q of the partitioned stream %q within StartTimeout (%v); check the Redis client's address, password and TLS settings: %w",
				c.p.ErrStartTimeout, c.p.Group, c.p.Stream, c.p.StartTimeout, err)
		}
		c.redisError("partition heartbeat", err, !startBy.IsZero())
		c.state.Store(int32(engine.StateDegraded))
		return nil // no balancing without a member count
	}
	c.p.Live.Set(names)
	c.state.Store(int32(engine.StateRunning))
	return c.balance(ctx, max(len(names), 1))
}

// balance takes or hands back partitions to reach the fair share among
// members consumers.
func (c *Coordinator) balance(ctx context.Context, members int) error {
	n := c.p.Partitions
	share := (n + members - 1) / members
	active := 0
	for _, p := range c.parts {
		if !p.leaving {
			active++
		}
	}
	if active > share {
		// Hand back the highest-numbered partitions.
		for _, p := range slices.Backward(c.sorted()) {
			if active == share {
				break
			}
			if !p.leaving {
				c.p.Log.Info("handing a partition back to balance the group",
					slog.String("partition", p.eng.Stream()), slog.Int("members", members), slog.Int("share", share))
				c.stop(p)
				active--
			}
		}
		return nil
	}
	now := c.p.Clock.Now()
	ttlMS := c.p.TTL.Milliseconds()
	for k := 0; k < n && active < share; k++ {
		i := (c.start + k) % n
		if _, ok := c.parts[i]; ok {
			continue
		}
		if until, ok := c.blocked[i]; ok {
			if now.Before(until) {
				continue
			}
			delete(c.blocked, i)
		}
		key := keys.Owner(c.p.Stream, i, n, c.p.Group)
		actx, cancel := context.WithTimeout(ctx, c.callTimeout())
		sent := c.p.Clock.Now()
		ok, err := scripts.Acquire.Run(actx, c.p.Client, []string{key}, c.p.Consumer, ttlMS).Int64()
		cancel()
		if err != nil {
			if engine.IsFatal(err) {
				return fmt.Errorf("%w: taking the ownership of %s: %w", c.p.ErrRedisFatal, key, err)
			}
			c.redisError("partition acquire", err, false)
			return nil
		}
		if ok == 1 {
			c.begin(ctx, i, key, sent)
			active++
		}
	}
	return nil
}

// renew renews the ownership of every partition this consumer reads, also
// of those being handed back: their handlers may still run, and no one may
// start on the partition before they finish. A partition someone else owns
// now is stopped, its handlers cut at once. One whose ownership has not
// been renewed for half of its TTL is stopped; its watchdog cuts its
// handlers in time for them to end before the ownership can expire.
func (c *Coordinator) renew(parent context.Context) error {
	ctx, cancelAll := context.WithTimeout(parent, 2*c.callTimeout())
	defer cancelAll()
	for _, p := range c.sorted() {
		rctx, cancel := context.WithTimeout(ctx, c.callTimeout())
		sent := c.p.Clock.Now()
		ok, err := scripts.Renew.Run(rctx, c.p.Client, []string{p.key}, c.p.Consumer, c.p.TTL.Milliseconds()).Int64()
		cancel()
		switch {
		case err != nil:
			if engine.IsFatal(err) {
				return fmt.Errorf("%w: renewing the ownership of %s: %w", c.p.ErrRedisFatal, p.key, err)
			}
			if parent.Err() == nil {
				c.redisError("partition renew", err, false)
			}
		case ok == 0:
			if !p.lost {
				p.lost = true
				c.p.Log.Warn("another consumer owns this partition now; stopping it", slog.String("partition", p.eng.Stream()))
				c.observe(engine.Event{Kind: engine.EventPartitionLost, Partition: p.index})
			}
			// Its handlers must end now: the other owner may be reading.
			p.eng.Cut()
			c.stop(p)
			continue
		default:
			p.renewed = sent
			p.watchdog.Reset(c.untilCut(sent))
			continue
		}
		if parent.Err() == nil && c.p.Clock.Now().Sub(p.renewed) > c.p.TTL/2 {
			if !p.leaving {
				c.p.Log.Warn("cannot renew the ownership of a partition; stopping it before another consumer may take it over",
					slog.String("partition", p.eng.Stream()), slog.Any("err", err))
			}
			c.stop(p) // the watchdog cuts its handlers in time
		}
	}
	return nil
}

// begin starts reading partition i, whose ownership this consumer took at
// time sent.
func (c *Coordinator) begin(ctx context.Context, i int, key string, sent time.Time) {
	eng := c.p.NewEngine(i, c.sem)
	ectx, cancel := context.WithCancel(ctx)
	p := &owned{index: i, key: key, eng: eng, cancel: cancel, done: make(chan struct{}), renewed: sent}
	// Whatever the coordinator's calls to Redis do (a silent Redis can hold
	// them for the client's ReadTimeout), the handlers are cut before the
	// ownership can expire, unless a renewal moves the deadline on.
	p.watchdog = c.p.Clock.AfterFunc(c.untilCut(sent), func() {
		eng.Cut()
		cancel()
	})
	c.parts[i] = p
	c.mu.Lock()
	c.engines = append(c.engines, eng)
	c.mu.Unlock()
	c.p.Log.Info("took ownership of a partition", slog.String("partition", eng.Stream()))
	c.observe(engine.Event{Kind: engine.EventPartitionAcquired, Partition: i})
	go func() {
		p.err = eng.Run(ectx)
		close(p.done)
		select {
		case c.exited <- struct{}{}:
		default:
		}
	}()
}

// stop asks a partition's engine to stop; reap releases its key once it
// has.
func (c *Coordinator) stop(p *owned) {
	p.leaving = true
	p.cancel()
}

// reap forgets partitions whose engine has returned, releasing their owner
// keys. An engine that failed for good fails Run.
func (c *Coordinator) reap() error {
	var fatal error
	for i, p := range c.parts {
		select {
		case <-p.done:
		default:
			continue
		}
		p.cancel()
		p.watchdog.Stop()
		delete(c.parts, i)
		c.mu.Lock()
		if j := slices.Index(c.engines, p.eng); j >= 0 {
			c.engines = slices.Delete(c.engines, j, j+1)
		}
		c.mu.Unlock()
		switch {
		case errors.Is(p.err, c.p.ErrShutdownTimeout):
			// Handlers still run: keep the key until it expires, and do
			// not take the partition again before, so that the next owner
			// waits for them as long as it can.
			c.blocked[i] = p.renewed.Add(c.p.TTL)
			if c.leaked == nil {
				c.leaked = p.err
			}
			c.p.Log.Warn("a partition's handlers did not stop; its ownership expires after ClaimMinIdle",
				slog.String("partition", p.eng.Stream()))
		case p.err != nil:
			if fatal == nil {
				fatal = p.err
			}
			continue
		case !p.lost:
			c.release(p)
		}
		if !p.lost {
			c.observe(engine.Event{Kind: engine.EventPartitionReleased, Partition: i})
		}
	}
	return fatal
}

// release deletes a partition's owner key, so that another consumer can take
// the partition at once. If that fails, the key expires after the TTL.
func (c *Coordinator) release(p *owned) {
	ctx, cancel := context.WithTimeout(context.Background(), c.callTimeout())
	defer cancel()
	if err := scripts.Release.Run(ctx, c.p.Client, []string{p.key}, c.p.Consumer).Err(); err != nil {
		c.p.Log.Info("could not release a partition; another consumer takes it over once its ownership expires",
			slog.String("partition", p.eng.Stream()), slog.Any("err", err))
	}
}

// shutdown stops every partition and waits for the engines to return,
// renewing their ownership meanwhile (handlers may take up to
// ShutdownTimeout), then releases their keys and leaves the member set. It
// returns the first error an engine returned.
func (c *Coordinator) shutdown() error {
	for _, p := range c.parts {
		c.stop(p)
	}
	var first error
	if err := c.renew(context.Background()); err != nil {
		first = err
	}
	tick := c.p.Clock.NewTimer(c.p.LeaseInterval)
	defer tick.Stop()
	for len(c.parts) > 0 {
		select {
		case <-c.exited:
		case <-tick.C():
			tick.Reset(c.p.LeaseInterval)
			if err := c.renew(context.Background()); err != nil && first == nil {
				first = err
			}
		}
		if err := c.reap(); err != nil && first == nil {
			first = err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.callTimeout())
	defer cancel()
	if err := c.p.Client.ZRem(ctx, c.members, c.p.Consumer).Err(); err != nil {
		c.p.Log.Info("could not leave the member set; the other consumers notice after ClaimMinIdle", slog.Any("err", err))
	}
	return first
}

// sorted returns the owned partitions by index.
func (c *Coordinator) sorted() []*owned {
	ps := make([]*owned, 0, len(c.parts))
	for _, p := range c.parts {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *owned) int { return a.index - b.index })
	return ps
}

// redisError reports a failed coordination call; at the start, while
// StartTimeout runs, at ERROR once.
func (c *Coordinator) redisError(op string, err error, starting bool) {
	if errors.Is(err, context.Canceled) {
		return // Run is stopping
	}
	first := c.p.Stats.RedisErrors.Load() == 0
	c.p.Stats.NoteRedisError(err, c.p.Clock.Now())
	c.observe(engine.Event{Kind: engine.EventRedisError, Err: err})
	switch {
	case starting && first:
		c.p.Log.Error("cannot reach Redis to join the group; retrying until StartTimeout (check the client's address, password and TLS settings)",
			slog.String("op", op), slog.Any("err", err), slog.Duration("start_timeout", c.p.StartTimeout))
	case !starting:
		c.p.Log.Warn("redis call failed; will retry", slog.String("op", op), slog.Any("err", err))
	}
}

func (c *Coordinator) observe(e engine.Event) {
	if c.p.Observe != nil {
		c.p.Observe(e)
	}
}
