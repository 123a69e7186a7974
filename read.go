package completion

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/wire"
)

// createGroup creates the consumer group, and the stream with it, reading
// from the stream's first entry. BUSYGROUP (it exists) is success. Transient
// errors are retried until the run stops.
func (r *run) createGroup() error {
	bo := backoff{base: r.cfg.ErrorBackoff, max: r.cfg.MaxErrorBackoff}
	for {
		err := r.c.client.XGroupCreateMkStream(r.ioCtx, r.cfg.Stream, r.cfg.Group, "0").Err()
		switch {
		case err == nil:
			r.log.Info("created consumer group")
			return nil
		case redis.HasErrorPrefix(err, "BUSYGROUP"):
			return nil
		case isFatal(err):
			err = fmt.Errorf("%w: XGROUP CREATE %s %s: %w", ErrRedisFatal, r.cfg.Stream, r.cfg.Group, err)
			r.fail(err)
			return err
		}
		r.setState(StateDegraded)
		r.redisError("xgroup-create", err)
		if !sleep(r.stop, bo.next()) {
			return errors.New("stopped")
		}
	}
}

// readLoop reads until the run stops: first the entries still pending for
// this consumer (a previous life of it may have crashed holding them, or a
// client-side timeout may have left a delivered entry behind), then new
// ones. After any read error it reads its own pending list again, which
// recovers entries a timed-out read delivered without the client seeing
// them.
func (r *run) readLoop() {
	bo := backoff{base: r.cfg.ErrorBackoff, max: r.cfg.MaxErrorBackoff}
	args := redis.XReadGroupArgs{
		Group:    r.cfg.Group,
		Consumer: r.cfg.Consumer,
		Streams:  []string{r.cfg.Stream, "0"},
		Count:    int64(r.cfg.BatchSize),
		Block:    r.cfg.Block,
	}
	ownPending, cursor := true, "0" // start with the own pending list
	for !r.stopped() {
		if ownPending {
			args.Streams[1] = cursor
			args.Block = -1 // no BLOCK: a history read returns at once
		} else {
			args.Streams[1] = ">"
			args.Block = r.cfg.Block
		}
		if ownPending {
			r.guard() // until its entries are tracked: see run.acked
		}
		streams, err := r.read(&args)
		if ownPending && err != nil {
			r.unguard()
		}
		if err != nil {
			if errors.Is(err, redis.Nil) { // BLOCK timed out, or unblocked
				if !ownPending {
					r.readWorks(&bo)
				}
				continue
			}
			if r.stopped() {
				return
			}
			if isFatal(err) {
				r.fail(fmt.Errorf("%w: XREADGROUP %s %s: %w", ErrRedisFatal, r.cfg.Stream, r.cfg.Group, err))
				return
			}
			if isNoGroup(err) {
				r.log.Warn("stream or group is gone (deleted, expired or flushed); recreating the group from the first entry", slog.Any("err", err))
				r.newEpoch()
				if r.createGroup() != nil {
					return
				}
				continue
			}
			r.setState(StateDegraded)
			r.redisError("xreadgroup", err)
			ownPending, cursor = true, "0"
			if !sleep(r.stop, bo.next()) {
				return
			}
			continue
		}
		if !ownPending {
			r.readWorks(&bo)
		}
		var msgs []redis.XMessage
		if len(streams) > 0 {
			msgs = streams[0].Messages
		}
		if ownPending {
			if len(msgs) > 0 {
				r.handOwnPending(msgs)
				cursor = msgs[len(msgs)-1].ID
			}
			r.unguard()
			if len(msgs) < r.cfg.BatchSize {
				ownPending = false
				if State(r.state.Load()) == StateStarting {
					r.setState(StateRunning)
				}
			}
			continue
		}
		held := r.trackBatch(r.newDeliveries(msgs, nil), false)
		r.prefetchTasks(held)
		for _, d := range held {
			if !r.dispatch(d) {
				r.forgetFrom(held, d)
				return
			}
		}
	}
}

// readWorks notes a successful read of new entries: only such a read, on
// the dedicated connection, shows that reading works again (a history read
// through the client may succeed while the dedicated connection fails).
func (r *run) readWorks(bo *backoff) {
	bo.reset()
	switch State(r.state.Load()) {
	case StateDegraded:
		r.setState(StateRunning)
		r.log.Info("redis is answering again; resuming")
	case StateStarting:
		r.setState(StateRunning)
	}
}

// read issues the XREADGROUP, history reads through the client, blocking
// ones through the interruptible reader.
func (r *run) read(args *redis.XReadGroupArgs) ([]redis.XStream, error) {
	if args.Streams[1] != ">" {
		return r.c.client.XReadGroup(r.ioCtx, args).Result()
	}
	if r.reader.conn == nil && !r.reader.plain {
		if err := r.reader.open(r.ioCtx); err != nil && !r.stopped() {
			r.redisError("open reader connection", err)
		}
	}
	if r.stopped() {
		return nil, redis.Nil
	}
	return r.reader.read(r.ioCtx, args)
}

// handOwnPending dispatches entries re-read from this consumer's pending
// list. Their delivery counts come from XPENDING; entries deleted from the
// stream while pending come back without fields and are acknowledged.
func (r *run) handOwnPending(msgs []redis.XMessage) {
	live := msgs[:0:0]
	var gone []string
	for _, m := range msgs {
		if m.Values == nil {
			gone = append(gone, m.ID)
			continue
		}
		live = append(live, m)
	}
	if len(gone) > 0 {
		r.reportDeletedUnlessHeld(gone)
		if err := r.c.client.XAck(r.ioCtx, r.cfg.Stream, r.cfg.Group, gone...).Err(); err != nil {
			r.redisError("xack", err)
		}
	}
	r.dispatchReclaimed(live, false)
}

// dispatchReclaimed tracks and dispatches entries claimed with XAUTOCLAIM or
// re-read from the own pending list, after asking XPENDING for their
// delivery counts. Entries XPENDING no longer lists were acknowledged
// meanwhile and are dropped.
func (r *run) dispatchReclaimed(msgs []redis.XMessage, preempt bool) {
	if len(msgs) == 0 {
		return
	}
	ds := r.newDeliveries(msgs, r.deliveryCounts(msgs))
	keep := ds[:0]
	for _, d := range ds {
		if d.count > 0 {
			keep = append(keep, d)
		}
	}
	held := r.trackBatch(keep, preempt)
	for _, d := range held {
		r.c.stats.reclaimed.Add(1)
		r.observeDelivery(EventReclaimed, d)
		if !r.dispatch(d) {
			r.forgetFrom(held, d)
			return
		}
	}
}

// forgetFrom forgets the deliveries of held from d on: the run stopped
// before they were dispatched; they stay pending.
func (r *run) forgetFrom(held []*delivery, d *delivery) {
	for i, h := range held {
		if h == d {
			r.forget(held[i:]...)
			return
		}
	}
}

// deliveryCounts asks XPENDING for the delivery count of each entry, in one
// pipelined round trip. An entry XPENDING does not list any more gets 0 (it
// was acknowledged meanwhile); where XPENDING cannot tell (an error), 2.
func (r *run) deliveryCounts(msgs []redis.XMessage) []int64 {
	counts := make([]int64, len(msgs))
	for i := range counts {
		counts[i] = 2
	}
	if len(msgs) == 0 {
		return counts
	}
	cmds := make([]*redis.XPendingExtCmd, len(msgs))
	_, err := r.c.client.Pipelined(r.ioCtx, func(p redis.Pipeliner) error {
		for i, m := range msgs {
			cmds[i] = p.XPendingExt(r.ioCtx, &redis.XPendingExtArgs{
				Stream: r.cfg.Stream, Group: r.cfg.Group, Start: m.ID, End: m.ID, Count: 1,
			})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		r.redisError("xpending", err)
	}
	for i, cmd := range cmds {
		p, err := cmd.Result()
		switch {
		case err != nil:
		case len(p) == 0:
			counts[i] = 0
		case p[0].RetryCount > 0:
			counts[i] = p[0].RetryCount
		}
	}
	return counts
}

// reportDeleted logs and counts entries that were trimmed or deleted while
// pending.
func (r *run) reportDeleted(ids []string) {
	r.c.stats.deletedWhilePending.Add(int64(len(ids)))
	for _, id := range ids {
		r.observe(Event{Kind: EventDeletedWhilePending, EntryID: id})
	}
	r.log.Warn("entries were deleted from the stream while pending (trimmed by MAXLEN or XDEL); their completions are lost: size MAXLEN for the slowest group",
		slog.Int("count", len(ids)), slog.String("first_id", ids[0]))
}

// newDeliveries decodes a batch of entries, in one allocation. counts are
// their delivery counts; nil means first deliveries.
func (r *run) newDeliveries(msgs []redis.XMessage, counts []int64) []delivery {
	ds := make([]delivery, len(msgs))
	r.mu.Lock()
	epoch := r.epoch
	r.mu.Unlock()
	t := now()
	for i := range msgs {
		count := int64(1)
		if counts != nil {
			count = counts[i]
		}
		r.initDelivery(&ds[i], &msgs[i], count, epoch, t)
	}
	return ds
}

// initDelivery decodes an entry into d. Decoding failures are kept on the
// delivery; the worker dead-letters it.
func (r *run) initDelivery(d *delivery, m *redis.XMessage, count int64, epoch uint64, touched time.Time) {
	*d = delivery{id: m.ID, values: m.Values, count: count, epoch: epoch, touched: touched, retryIdx: -1}
	raw, ok := m.Values[DataField]
	if !ok {
		d.badMsg, d.reason = fmt.Errorf("%w: the entry has no %q field", ErrMalformed, DataField), ReasonMalformed
		return
	}
	s, ok := raw.(string)
	if !ok {
		d.badMsg, d.reason = fmt.Errorf("%w: field %q is not a string", ErrMalformed, DataField), ReasonMalformed
		return
	}
	if len(s) > r.cfg.MaxPayloadBytes {
		d.badMsg, d.reason = fmt.Errorf("%w: field %q holds %s bytes, over MaxPayloadBytes (%d)", ErrMalformed, DataField, strconv.Itoa(len(s)), r.cfg.MaxPayloadBytes), ReasonOversize
		d.bodyOversize = true
		return
	}
	if len(m.Values) > 1 { // fields besides DataField (WithField) count too
		if len(m.Values) > MaxEntryFields {
			d.badMsg, d.reason = fmt.Errorf("%w: the entry has %s fields, over MaxEntryFields (%d)", ErrMalformed, strconv.Itoa(len(m.Values)), MaxEntryFields), ReasonOversize
			d.bodyOversize = true
			return
		}
		if n := entryBytes(m.Values); n > r.cfg.MaxPayloadBytes {
			d.badMsg, d.reason = fmt.Errorf("%w: the entry's fields hold %s bytes (%q: %d), over MaxPayloadBytes (%d)", ErrMalformed, strconv.Itoa(n), DataField, len(s), r.cfg.MaxPayloadBytes), ReasonOversize
			d.bodyOversize = true
			return
		}
	}
	if err := wire.DecodeString(s, (*wire.Message)(&d.msg)); err != nil {
		d.badMsg, d.reason = err, ReasonMalformed
		return
	}
	switch {
	case len(d.msg.OperationID) > r.cfg.MaxIDBytes, len(d.msg.TaskID) > r.cfg.MaxIDBytes:
		d.badMsg, d.reason = fmt.Errorf("%w: an id is longer than MaxIDBytes (%d)", ErrMalformed, r.cfg.MaxIDBytes), ReasonOversize
	case len(d.msg.Error) > r.cfg.MaxErrorBytes:
		d.badMsg, d.reason = fmt.Errorf("%w: field \"error\" holds %d bytes, over MaxErrorBytes (%d)", ErrMalformed, len(d.msg.Error), r.cfg.MaxErrorBytes), ReasonOversize
	}
	if d.badMsg != nil {
		// Keep oversize ids out of logs and dead-letter metadata; the
		// original entry is kept whole in the dead letter.
		d.msg = Message{}
	}
}

// prefetchTasks looks up the tasks of a read batch in one call when the
// registry offers batch lookups (BatchTaskRegistry, e.g. redisregistry:
// one round trip for the batch instead of one per entry).
func (r *run) prefetchTasks(ds []*delivery) {
	batch, ok := r.c.registry.(BatchTaskRegistry)
	if !ok || len(ds) < 2 {
		return
	}
	keys := make([]TaskKey, 0, len(ds))
	idx := make([]int, 0, len(ds))
	for i, d := range ds {
		if d.badMsg == nil {
			keys = append(keys, TaskKey{OperationID: d.msg.OperationID, TaskID: d.msg.TaskID})
			idx = append(idx, i)
		}
	}
	if len(keys) == 0 {
		return
	}
	var tasks []Task
	var errs []error
	func() {
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("batch task lookup panicked; looking tasks up one by one", slog.String("panic", logText(fmt.Sprint(p))))
				tasks, errs = nil, nil
			}
		}()
		tasks, errs = batch.LookupTasks(r.readCtx, keys)
	}()
	if len(tasks) != len(keys) || len(errs) != len(keys) {
		return // a broken implementation: look up one by one instead
	}
	for j, i := range idx {
		ds[i].prefetched, ds[i].task, ds[i].taskErr = true, tasks[j], errs[j]
	}
}

// entryBytes returns the size of an entry for Config.MaxPayloadBytes: its
// values, and the names of its fields other than DataField. It does not
// allocate.
func entryBytes(values map[string]any) int {
	n := 0
	for k, v := range values {
		if k != DataField {
			n += len(k)
		}
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	return n
}
