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
// process stalled) stops reading the partition, well before the key can
// expire and another consumer can take over.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// acquireScript takes or renews the ownership of a partition: the owner key
// is set to this consumer, with a fresh time-to-live, if it is free or
// already this consumer's. It returns 1 when this consumer owns the
// partition, 0 when someone else does.
//
// KEYS[1] owner key; ARGV[1] consumer, ARGV[2] time-to-live in ms.
var acquireScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// releaseScript deletes the owner key if this consumer still owns it.
//
// KEYS[1] owner key; ARGV[1] consumer.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// heartbeatScript refreshes this consumer in the member set, drops members
// that have been silent for the time-to-live, and returns how many are
// left. Scores are the server's clock, so skewed clocks across pods do not
// matter. The set expires when every consumer has gone.
//
// KEYS[1] member set; ARGV[1] consumer, ARGV[2] time-to-live in ms.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
`)

// adoptScript moves a batch of the group's pending entries, whoever holds
// them, to this consumer without counting a delivery (JUSTID): the re-read
// of the own pending list that follows counts it. It returns the next
// cursor, how many entries it moved, and the ids of entries deleted from the
// stream while pending (Redis drops those from the pending list).
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] cursor, ARGV[4]
// count.
var adoptScript = redis.NewScript(`
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', ARGV[4], 'JUSTID')
return {r[1], #r[2], r[3] or {}}
`)

// MembersKey returns the key of the sorted set in which the consumers of
// group reading a partitioned stream announce themselves (see
// Config.Partitions).
func MembersKey(stream, group string) string {
	return stream + ":members:" + group
}

// OwnerKey returns the key that names the consumer of group owning
// partition i of n of stream (see Config.Partitions). It is in the
// partition's Redis Cluster slot.
func OwnerKey(stream string, i, n int, group string) string {
	return PartitionStream(stream, i, n) + ":owner:" + group
}

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
}

// runPartitioned is Run for a partitioned stream.
func (c *Consumer) runPartitioned(ctx context.Context) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte(c.cfg.Consumer))
	o := &owner{
		c:       c,
		cfgs:    c.partitionConfigs(),
		members: MembersKey(c.cfg.Stream, c.cfg.Group),
		ttl:     c.cfg.ClaimMinIdle,
		parts:   make(map[int]*owned),
		exited:  make(chan struct{}, 1),
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
	if fatal != nil {
		return fatal
	}
	return err
}

// step does one round of coordination: it collects partitions whose run
// has returned, announces this consumer, renews what it owns, and takes or
// hands back partitions to reach its fair share. It returns a fatal error.
func (o *owner) step(ctx context.Context) error {
	if err := o.reap(); err != nil {
		return err
	}
	ioCtx, cancel := context.WithTimeout(ctx, o.c.cfg.LeaseInterval)
	defer cancel()
	cfg := &o.c.cfg
	ttlMS := o.ttl.Milliseconds()

	members, err := heartbeatScript.Run(ioCtx, o.c.client, []string{o.members}, cfg.Consumer, ttlMS).Int64()
	if err != nil {
		if isFatal(err) {
			return fmt.Errorf("%w: announcing consumer %q in %s: %w", ErrRedisFatal, cfg.Consumer, o.members, err)
		}
		o.redisError("partition heartbeat", err)
	}

	// Renew, also the partitions being handed back: their handlers may
	// still run, and no one may start on the partition until they finish.
	for _, p := range o.sorted() {
		sent := time.Now()
		ok, rerr := acquireScript.Run(ioCtx, o.c.client, []string{p.key}, cfg.Consumer, ttlMS).Int64()
		switch {
		case rerr != nil:
			if isFatal(rerr) {
				return fmt.Errorf("%w: renewing the ownership of %s: %w", ErrRedisFatal, p.key, rerr)
			}
			o.redisError("partition renew", rerr)
			if !p.leaving && time.Since(p.renewed) > o.ttl/2 {
				o.c.log.Warn("cannot renew the ownership of a partition; stopping it before another consumer may take it over",
					slog.String("partition", o.cfgs[p.index].Stream), slog.Any("err", rerr))
				o.stop(p)
			}
		case ok == 0:
			p.lost = true
			if !p.leaving {
				o.c.log.Warn("another consumer owns this partition now; stopping it",
					slog.String("partition", o.cfgs[p.index].Stream))
				o.observe(Event{Kind: EventPartitionLost, Partition: p.index})
				o.stop(p)
			}
		default:
			p.renewed = sent
		}
	}
	if err != nil || ctx.Err() != nil {
		return nil // no balancing without a member count
	}
	if o.c.ownState.Load() == int32(StateStarting) {
		o.c.ownState.Store(int32(StateRunning))
	}

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
	for k := 0; k < n && active < share; k++ {
		i := (o.start + k) % n
		if _, ok := o.parts[i]; ok {
			continue
		}
		key := OwnerKey(cfg.Stream, i, n, cfg.Group)
		ok, aerr := acquireScript.Run(ioCtx, o.c.client, []string{key}, cfg.Consumer, ttlMS).Int64()
		if aerr != nil {
			if isFatal(aerr) {
				return fmt.Errorf("%w: taking the ownership of %s: %w", ErrRedisFatal, key, aerr)
			}
			o.redisError("partition acquire", aerr)
			return nil
		}
		if ok == 1 {
			o.begin(ctx, i, key, share)
			active++
		}
	}
	return nil
}

// begin starts reading partition i, which this consumer now owns. Its
// share of Concurrency is set by the fair share at the time.
func (o *owner) begin(ctx context.Context, i int, key string, share int) {
	cfg := o.cfgs[i]
	cfg.Concurrency = max(1, (o.c.cfg.Concurrency+share-1)/share)
	r := newRun(o.c, cfg)
	r.adopt = true
	rctx, cancel := context.WithCancel(ctx)
	p := &owned{index: i, key: key, r: r, cancel: cancel, done: make(chan struct{}), renewed: time.Now()}
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
		delete(o.parts, i)
		o.c.removeRun(p.r)
		switch {
		case errors.Is(p.err, ErrShutdownTimeout):
			// Handlers still run: keep the key until it expires, so that
			// the next owner waits for them as long as it can.
			o.c.log.Warn("a partition's handlers did not stop; its ownership expires after ClaimMinIdle",
				slog.String("partition", o.cfgs[i].Stream))
		case p.err != nil:
			if fatal == nil {
				fatal = p.err
			}
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
// the partition at once.
func (o *owner) release(p *owned) {
	ctx, cancel := context.WithTimeout(context.Background(), finalAckTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, o.c.client, []string{p.key}, o.c.cfg.Consumer).Err(); err != nil {
		o.c.log.Info("could not release a partition; another consumer takes it over once its ownership expires",
			slog.String("partition", o.cfgs[p.index].Stream), slog.Any("err", err))
	}
}

// shutdown stops every partition, waits for the runs to return, releases
// their keys and leaves the member set. It returns the first error a run
// returned.
func (o *owner) shutdown() error {
	for _, p := range o.parts {
		o.stop(p)
	}
	var first error
	for _, p := range o.parts {
		<-p.done
		if p.err != nil && first == nil {
			first = p.err
		}
	}
	if err := o.reap(); err != nil && first == nil {
		first = err
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalAckTimeout)
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
		res, err := adoptScript.Run(r.ioCtx, r.c.client, []string{r.cfg.Stream},
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
