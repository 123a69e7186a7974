package completion

// Partition ownership.
//
// With Config.Partitions > 1 the consumers of a group share the partitions
// out: each partition is read by one consumer at a time, its owner, so that
// a task's completions (which Publish puts in one partition) are handled in
// order however many consumers run. The consumers coordinate through two
// kinds of keys:
//
//   - the member set, "<Stream>:members:<Group>", a sorted set in which each
//     running consumer refreshes its name every LeaseInterval, scored with
//     the Redis server's clock; names silent for ClaimMinIdle drop out;
//   - one owner key per partition, "<partition key>:owner:<Group>", holding
//     the owner's name with a time-to-live of ClaimMinIdle that the owner
//     renews every LeaseInterval. It shares the partition's hash tag, so it
//     lives on the partition's node.
//
// Each consumer aims at its fair share, ceil(Partitions / members): below
// it, it takes partitions whose owner key is free; above it, it hands
// partitions back, which means it stops reading them, lets their running
// handlers finish and acknowledges them, and only then deletes the owner
// key. A new owner first takes over everything the group still has pending
// in the partition (left behind by a previous owner that stopped or died)
// and handles it in stream order before it reads new entries. An owner that
// has not renewed its key for half of ClaimMinIdle (Redis unreachable, the
// process stalled) stops reading the partition, and a timer per partition,
// independent of any Redis call, cancels its handlers' context a quarter of
// ClaimMinIdle before the key can expire and another consumer can take
// over (no handler starts after that, and entries whose handler then fails
// are left to the next owner); the keys of partitions
// being handed back, also at shutdown, are renewed until their handlers
// have finished. One semaphore of Concurrency slots is shared by the runs
// of all owned partitions.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"time"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// owned is a partition this consumer owns, or is handing back.
type owned struct {
	index   int
	key     string // owner key
	r       *run
	cancel  context.CancelFunc
	done    chan struct{} // closed when r.run has returned; err is set then
	err     error
	renewed time.Time // when the last successful renewal was sent
	leaving bool      // stopped: its key is released once r has returned
	lost    bool      // someone else owns the key: do not release it
	// watchdog cuts the run's handlers and stops it at renewed + ttl -
	// cutMargin, unless a renewal resets it first.
	watchdog *time.Timer
}

// untilCut returns how long from now a partition whose ownership was last
// renewed at renewed may keep its handlers running: until a quarter of the
// time-to-live before the ownership can expire, which leaves handlers that
// honour their context time to return.
func (o *owner) untilCut(renewed time.Time) time.Duration {
	return time.Until(renewed.Add(o.ttl - o.ttl/4))
}

// owner runs the partitions a Consumer owns and balances them with the
// other consumers of the group. Its fields are used by Run's goroutine only.
type owner struct {
	c       *Consumer
	cfgs    []Config // one per partition
	members string
	ttl     time.Duration
	parts   map[int]*owned
	exited  chan struct{} // nudged when a partition's run returns
	start   int           // where this consumer starts looking for free partitions
	sem     chan struct{} // Concurrency slots shared by the partitions' runs
	// blocked holds partitions whose handlers did not stop when their run
	// ended: this consumer does not take them again before the time given,
	// when their owner key has expired.
	blocked map[int]time.Time
	leaked  error // the first ErrShutdownTimeout of a partition's run
}

// runPartitioned is Run for a partitioned stream.
func (c *Consumer) runPartitioned(ctx context.Context) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte(c.cfg.Consumer))
	o := &owner{
		c:       c,
		cfgs:    c.partitionConfigs(),
		members: keys.Members(c.cfg.Stream, c.cfg.Group),
		ttl:     c.cfg.ClaimMinIdle,
		parts:   make(map[int]*owned),
		exited:  make(chan struct{}, 1),
		sem:     make(chan struct{}, c.cfg.Concurrency),
		blocked: make(map[int]time.Time),
	}
	o.start = int(h.Sum32() % uint32(len(o.cfgs)))
	c.ownState.Store(int32(StateStarting))
	defer c.ownState.Store(0)

	// The first fatal error of a partition's run, or of the coordination,
	// ends Run.
	var fatal error
	tick := time.NewTimer(0)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			tick.Reset(c.cfg.LeaseInterval)
		case <-o.exited:
		}
		if fatal = o.step(ctx); fatal != nil {
			break
		}
	}
	c.ownState.Store(int32(StateStopping))
	err := o.shutdown()
	switch {
	case fatal != nil:
		return fatal
	case err != nil:
		return err
	}
	return o.leaked
}

// callTimeout bounds each coordination call (a heartbeat, an acquisition, a
// release), and twice that the renewals of one step together, so that a
// hung Redis cannot hold the coordinator up.
func (o *owner) callTimeout() time.Duration { return max(o.c.cfg.LeaseInterval/4, 50*time.Millisecond) }

// step does one round of coordination: it collects partitions whose run
// has returned, renews what it owns, announces this consumer, and takes or
// hands back partitions to reach its fair share. It returns a fatal error.
func (o *owner) step(ctx context.Context) error {
	if err := o.reap(); err != nil {
		return err
	}
	if err := o.renew(ctx); err != nil {
		return err
	}
	cfg := &o.c.cfg
	ttlMS := o.ttl.Milliseconds()
	hctx, cancel := context.WithTimeout(ctx, o.callTimeout())
	members, err := scripts.Heartbeat.Run(hctx, o.c.client, []string{o.members}, cfg.Consumer, ttlMS).Int64()
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		if isFatal(err) {
			return fmt.Errorf("%w: announcing consumer %q in %s: %w", ErrRedisFatal, cfg.Consumer, o.members, err)
		}
		o.redisError("partition heartbeat", err)
		o.c.ownState.Store(int32(StateDegraded))
		return nil // no balancing without a member count
	}
	o.c.ownState.Store(int32(StateRunning))

	n := len(o.cfgs)
	share := (n + int(max(members, 1)) - 1) / int(max(members, 1))
	active := 0
	for _, p := range o.parts {
		if !p.leaving {
			active++
		}
	}
	if active > share {
		// Hand back the highest-numbered partitions.
		for _, p := range slices.Backward(o.sorted()) {
			if active == share {
				break
			}
			if !p.leaving {
				o.c.log.Info("handing a partition back to balance the group",
					slog.String("partition", o.cfgs[p.index].Stream), slog.Int64("members", members), slog.Int("share", share))
				o.stop(p)
				active--
			}
		}
		return nil
	}
	now := time.Now()
	for k := 0; k < n && active < share; k++ {
		i := (o.start + k) % n
		if _, ok := o.parts[i]; ok {
			continue
		}
		if until, ok := o.blocked[i]; ok {
			if now.Before(until) {
				continue
			}
			delete(o.blocked, i)
		}
		key := keys.Owner(cfg.Stream, i, n, cfg.Group)
		actx, cancel := context.WithTimeout(ctx, o.callTimeout())
		sent := time.Now()
		ok, aerr := scripts.Acquire.Run(actx, o.c.client, []string{key}, cfg.Consumer, ttlMS).Int64()
		cancel()
		if aerr != nil {
			if isFatal(aerr) {
				return fmt.Errorf("%w: taking the ownership of %s: %w", ErrRedisFatal, key, aerr)
			}
			o.redisError("partition acquire", aerr)
			return nil
		}
		if ok == 1 {
			o.begin(ctx, i, key, sent)
			active++
		}
	}
	return nil
}

// renew renews the ownership of every partition this consumer reads, also
// of those being handed back: their handlers may still run, and no one may
// start on the partition before they finish. A partition someone else owns
// now is stopped, its handlers cut at once. One whose ownership has not
// been renewed for half of its time-to-live is stopped; its watchdog cuts
// its handlers in time for them to end before the ownership can expire.
func (o *owner) renew(parent context.Context) error {
	cfg := &o.c.cfg
	ctx, cancelAll := context.WithTimeout(parent, 2*o.callTimeout())
	defer cancelAll()
	for _, p := range o.sorted() {
		rctx, cancel := context.WithTimeout(ctx, o.callTimeout())
		sent := time.Now()
		ok, err := scripts.Renew.Run(rctx, o.c.client, []string{p.key}, cfg.Consumer, o.ttl.Milliseconds()).Int64()
		cancel()
		switch {
		case err != nil:
			if isFatal(err) {
				return fmt.Errorf("%w: renewing the ownership of %s: %w", ErrRedisFatal, p.key, err)
			}
			if parent.Err() == nil {
				o.redisError("partition renew", err)
			}
		case ok == 0:
			if !p.lost {
				p.lost = true
				o.c.log.Warn("another consumer owns this partition now; stopping it",
					slog.String("partition", o.cfgs[p.index].Stream))
				o.observe(Event{Kind: EventPartitionLost, Partition: p.index})
			}
			// Its handlers must end now: the other owner may be reading.
			p.r.cut()
			o.stop(p)
			continue
		default:
			p.renewed = sent
			p.watchdog.Reset(o.untilCut(sent))
			continue
		}
		if parent.Err() == nil && time.Since(p.renewed) > o.ttl/2 {
			if !p.leaving {
				o.c.log.Warn("cannot renew the ownership of a partition; stopping it before another consumer may take it over",
					slog.String("partition", o.cfgs[p.index].Stream), slog.Any("err", err))
			}
			o.stop(p) // the watchdog cuts its handlers in time

		}
	}
	return nil
}

// begin starts reading partition i, whose ownership this consumer took at
// time sent.
func (o *owner) begin(ctx context.Context, i int, key string, sent time.Time) {
	cfg := o.cfgs[i]
	r := newRun(o.c, cfg)
	r.adopt = true
	r.sem = o.sem
	rctx, cancel := context.WithCancel(ctx)
	p := &owned{index: i, key: key, r: r, cancel: cancel, done: make(chan struct{}), renewed: sent}
	// Whatever the coordinator's calls to Redis do (a silent Redis can hold
	// them for the client's ReadTimeout), the handlers are cut before the
	// ownership can expire, unless a renewal moves the deadline on.
	p.watchdog = time.AfterFunc(o.untilCut(sent), func() {
		r.cut()
		cancel()
	})
	o.parts[i] = p
	o.c.addRun(r)
	o.c.log.Info("took ownership of a partition", slog.String("partition", cfg.Stream))
	o.observe(Event{Kind: EventPartitionAcquired, Partition: i})
	go func() {
		p.err = r.run(rctx)
		close(p.done)
		select {
		case o.exited <- struct{}{}:
		default:
		}
	}()
}

// stop asks a partition's run to stop; reap releases its key once it has.
func (o *owner) stop(p *owned) {
	p.leaving = true
	p.cancel()
}

// reap forgets partitions whose run has returned, releasing their owner
// keys. A run that failed for good fails Run.
func (o *owner) reap() error {
	var fatal error
	for i, p := range o.parts {
		select {
		case <-p.done:
		default:
			continue
		}
		p.cancel()
		p.watchdog.Stop()
		delete(o.parts, i)
		o.c.removeRun(p.r)
		switch {
		case errors.Is(p.err, ErrShutdownTimeout):
			// Handlers still run: keep the key until it expires, and do
			// not take the partition again before, so that the next owner
			// waits for them as long as it can.
			o.blocked[i] = p.renewed.Add(o.ttl)
			if o.leaked == nil {
				o.leaked = p.err
			}
			o.c.log.Warn("a partition's handlers did not stop; its ownership expires after ClaimMinIdle",
				slog.String("partition", o.cfgs[i].Stream))
		case p.err != nil:
			if fatal == nil {
				fatal = p.err
			}
			continue
		case !p.lost:
			o.release(p)
		}
		if !p.lost {
			o.observe(Event{Kind: EventPartitionReleased, Partition: i})
		}
	}
	return fatal
}

// release deletes a partition's owner key, so that another consumer can take
// the partition at once. If that fails, the key expires after ClaimMinIdle.
func (o *owner) release(p *owned) {
	ctx, cancel := context.WithTimeout(context.Background(), o.callTimeout())
	defer cancel()
	if err := scripts.Release.Run(ctx, o.c.client, []string{p.key}, o.c.cfg.Consumer).Err(); err != nil {
		o.c.log.Info("could not release a partition; another consumer takes it over once its ownership expires",
			slog.String("partition", o.cfgs[p.index].Stream), slog.Any("err", err))
	}
}

// shutdown stops every partition and waits for the runs to return, renewing
// their ownership meanwhile (handlers may take up to ShutdownTimeout), then
// releases their keys and leaves the member set. It returns the first error
// a run returned.
func (o *owner) shutdown() error {
	for _, p := range o.parts {
		o.stop(p)
	}
	var first error
	if err := o.renew(context.Background()); err != nil {
		first = err
	}
	tick := time.NewTicker(o.c.cfg.LeaseInterval)
	defer tick.Stop()
	for len(o.parts) > 0 {
		select {
		case <-o.exited:
		case <-tick.C:
			if err := o.renew(context.Background()); err != nil && first == nil {
				first = err
			}
		}
		if err := o.reap(); err != nil && first == nil {
			first = err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.callTimeout())
	defer cancel()
	if err := o.c.client.ZRem(ctx, o.members, o.c.cfg.Consumer).Err(); err != nil {
		o.c.log.Info("could not leave the member set; the other consumers notice after ClaimMinIdle", slog.Any("err", err))
	}
	return first
}

// sorted returns the owned partitions by index.
func (o *owner) sorted() []*owned {
	ps := make([]*owned, 0, len(o.parts))
	for _, p := range o.parts {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *owned) int { return a.index - b.index })
	return ps
}

func (o *owner) redisError(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return // Run is stopping
	}
	o.c.noteRedisError(err)
	o.observe(Event{Kind: EventRedisError, Err: err})
	o.c.log.Warn("redis call failed; will retry", slog.String("op", op), slog.Any("err", err))
}

func (o *owner) observe(e Event) {
	if o.c.cfg.Observer == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			o.c.log.Error("Observer panicked; event dropped", slog.String("event", e.Kind.String()), slog.String("panic", logText(fmt.Sprint(p))))
		}
	}()
	o.c.cfg.Observer.Observe(e)
}

// adoptPending, at the start of a partition's run, moves to this consumer
// every entry the group still has pending in the partition, so that the
// read of the own pending list that follows handles them, in stream order,
// before any new entry. It retries transient errors until the run stops.
func (r *run) adoptPending() error {
	bo := backoff{base: r.cfg.ErrorBackoff, max: r.cfg.MaxErrorBackoff}
	cursor, moved := "0-0", 0
	for !r.stopped() {
		res, err := scripts.Adopt.Run(r.ioCtx, r.c.client, []string{r.cfg.Stream},
			r.cfg.Group, r.cfg.Consumer, cursor, r.cfg.BatchSize).Slice()
		if err == nil {
			next, n, deleted, perr := parseAdopt(res)
			if perr != nil {
				err = perr
			} else {
				moved += n
				if len(deleted) > 0 {
					r.reportDeleted(deleted)
				}
				if cursor = next; cursor == "0-0" || cursor == "" {
					if moved > 0 {
						r.log.Info("took over the entries previous owners left pending", slog.Int("count", moved))
					}
					return nil
				}
				bo.reset()
				continue
			}
		}
		switch {
		case isFatal(err):
			err = fmt.Errorf("%w: XAUTOCLAIM %s %s: %w", ErrRedisFatal, r.cfg.Stream, r.cfg.Group, err)
			r.fail(err)
			return err
		case isNoGroup(err):
			r.newEpoch()
			if err := r.createGroup(); err != nil {
				return err
			}
			cursor = "0-0"
			continue
		}
		r.setState(StateDegraded)
		r.redisError("adopt pending", err)
		if !sleep(r.stop, bo.next()) {
			break
		}
	}
	return errors.New("stopped")
}

// parseAdopt reads adoptScript's reply.
func parseAdopt(res []any) (next string, n int, deleted []string, err error) {
	if len(res) < 2 {
		return "", 0, nil, fmt.Errorf("unexpected reply to the adopt script: %v", res)
	}
	next, _ = res[0].(string)
	cnt, _ := res[1].(int64)
	if len(res) > 2 {
		ids, _ := res[2].([]any)
		for _, id := range ids {
			if s, ok := id.(string); ok {
				deleted = append(deleted, s)
			}
		}
	}
	return next, int(cnt), deleted, nil
}
