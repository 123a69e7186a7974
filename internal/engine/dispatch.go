package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/wire"
)

// decode turns a batch of entries into deliveries, in one allocation.
// counts are their delivery counts; nil means first deliveries. Decoding
// failures stay on the delivery (Bad, Reason): the Processor dead-letters
// it.
func (e *Engine) decode(msgs []redis.XMessage, counts []int64) []Delivery {
	ds := make([]Delivery, len(msgs))
	epoch := e.held.currentEpoch()
	now := e.now()
	for i := range msgs {
		count := int64(1)
		if counts != nil {
			count = counts[i]
		}
		d := &ds[i]
		*d = Delivery{ID: msgs[i].ID, Fields: msgs[i].Values, Count: count, Source: &e.source,
			epoch: epoch, touched: now, retryIdx: notQueued, size: entrySize(&msgs[i])}
		e.decodeOne(d)
	}
	return ds
}

// entrySize is what an entry costs the read-ahead budget.
func entrySize(m *redis.XMessage) int {
	const overhead = 64 // the id, the map
	return len(m.ID) + wire.EntryBytes(m.Values) + overhead
}

// decodeOne decodes d's data field and checks the limits.
func (e *Engine) decodeOne(d *Delivery) {
	bad := func(reason, format string, args ...any) {
		d.Bad, d.Reason = fmt.Errorf("%w: "+format, append([]any{wire.ErrMalformed}, args...)...), reason
	}
	raw, ok := d.Fields[wire.DataField]
	if !ok {
		bad(wire.ReasonMalformed, "the entry has no %q field", wire.DataField)
		return
	}
	s, ok := raw.(string)
	if !ok {
		bad(wire.ReasonMalformed, "field %q is not a string", wire.DataField)
		return
	}
	limit := e.p.MaxPayloadBytes
	switch {
	case len(s) > limit:
		bad(wire.ReasonOversize, "field %q holds %s bytes, over MaxPayloadBytes (%d)", wire.DataField, strconv.Itoa(len(s)), limit)
		d.oversize = true
		return
	case len(d.Fields) > wire.MaxEntryFields:
		bad(wire.ReasonOversize, "the entry has %s fields, over MaxEntryFields (%d)", strconv.Itoa(len(d.Fields)), wire.MaxEntryFields)
		d.oversize = true
		return
	case len(d.Fields) > 1: // fields besides data (WithField) count too
		if n := wire.EntryBytes(d.Fields); n > limit {
			bad(wire.ReasonOversize, "the entry's fields hold %s bytes (%q: %d), over MaxPayloadBytes (%d)", strconv.Itoa(n), wire.DataField, len(s), limit)
			d.oversize = true
			return
		}
	}
	if err := wire.DecodeString(s, &d.Msg); err != nil {
		d.Bad, d.Reason = err, wire.ReasonMalformed
		return
	}
	switch {
	case len(d.Msg.OperationID) > e.p.MaxIDBytes, len(d.Msg.TaskID) > e.p.MaxIDBytes:
		bad(wire.ReasonOversize, "an id is longer than MaxIDBytes (%d)", e.p.MaxIDBytes)
	case len(d.Msg.Error) > e.p.MaxErrorBytes:
		bad(wire.ReasonOversize, "field \"error\" holds %d bytes, over MaxErrorBytes (%d)", len(d.Msg.Error), e.p.MaxErrorBytes)
	}
	if d.Bad != nil {
		// Keep oversize ids out of logs and dead-letter metadata; the
		// original entry is kept whole in the dead letter.
		d.Msg = wire.Message{}
	}
}

// dispatch tracks a batch of deliveries as held, lets the Processor
// prefetch for them, and hands them to the workers. It returns false when
// the engine stopped (they stay pending).
func (e *Engine) dispatch(ds []Delivery, preempt, reclaimed bool) bool {
	held := e.held.track(ds, preempt)
	if len(held) == 0 {
		return !e.stopped()
	}
	e.p.Processor.Prefetch(e.ioCtx, held)
	e.p.Stats.Delivered.Add(int64(len(held)))
	if reclaimed {
		e.p.Stats.Reclaimed.Add(int64(len(held)))
		if e.p.Observe != nil {
			for _, d := range held {
				e.observe(EventOf(EventReclaimed, d))
			}
		}
	}
	if !e.queue.push(held) {
		e.held.forget(held...)
		return false
	}
	return true
}

// dispatchPending dispatches entries read from the own pending list or
// claimed with XAUTOCLAIM (claimed), after asking XPENDING for their
// delivery counts: entries XPENDING no longer lists were acknowledged
// meanwhile and are dropped. Entries deleted from the stream while pending
// come back without fields: the own ones are acknowledged and reported.
func (e *Engine) dispatchPending(msgs []redis.XMessage, claimed bool, discount int64) bool {
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
		e.reportDeletedUnlessHeld(gone)
		if !claimed { // XAUTOCLAIM dropped them from the pending list itself
			if err := e.p.Client.XAck(e.ioCtx, e.p.Stream, e.p.Group, gone...).Err(); err != nil {
				e.rep.fail("xack", err)
			}
		}
	}
	if len(live) == 0 {
		return true
	}
	counts := e.deliveryCounts(live)
	for i, n := range counts {
		if n > 1 {
			counts[i] = max(n-discount, 1)
		}
	}
	ds := e.decode(live, counts)
	keep := ds[:0]
	for _, d := range ds {
		if d.Count > 0 {
			keep = append(keep, d)
		}
	}
	clear(ds[len(keep):]) // stale copies would keep their entries in memory
	return e.dispatch(keep, claimed, true)
}

// deliveryCounts asks XPENDING for the delivery count of each entry, in one
// pipelined round trip. An entry XPENDING does not list any more gets 0 (it
// was acknowledged meanwhile); where XPENDING cannot tell (an error), 2.
func (e *Engine) deliveryCounts(msgs []redis.XMessage) []int64 {
	counts := make([]int64, len(msgs))
	for i := range counts {
		counts[i] = 2
	}
	cmds := make([]*redis.XPendingExtCmd, len(msgs))
	_, err := e.p.Client.Pipelined(e.ioCtx, func(p redis.Pipeliner) error {
		for i, m := range msgs {
			cmds[i] = p.XPendingExt(e.ioCtx, &redis.XPendingExtArgs{
				Stream: e.p.Stream, Group: e.p.Group, Start: m.ID, End: m.ID, Count: 1,
			})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		e.rep.fail("xpending", err)
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

// reportDeletedUnlessHeld reports the entries Redis found deleted from the
// stream, except those this engine holds and is handling: Redis drops every
// deleted entry from the pending list, whoever holds it, but a held one is
// not lost. (Another consumer may likewise still complete an entry counted
// here.) An entry waiting here for its retry is lost: forgotten and
// counted.
func (e *Engine) reportDeletedUnlessHeld(ids []string) {
	if lost := e.held.goneUnlessHeld(ids); len(lost) > 0 {
		e.reportDeleted(lost)
	}
}

// reportDeleted logs and counts entries that were trimmed or deleted while
// pending.
func (e *Engine) reportDeleted(ids []string) {
	e.p.Stats.DeletedWhilePending.Add(int64(len(ids)))
	for _, id := range ids {
		e.observe(Event{Kind: EventDeletedWhilePending, EntryID: id})
	}
	e.log.Warn("entries were deleted from the stream while pending (trimmed by MAXLEN or XDEL); their completions are lost: size MAXLEN for the slowest group",
		slog.Int("count", len(ids)), slog.String("first_id", ids[0]))
}
