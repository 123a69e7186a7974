package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/clock"
	"github.com/streamrelay/completion/internal/scripts"
)

// reader reads the stream: it creates the group, takes over a partition's
// leftovers (Params.Adopt), re-reads the consumer's own pending entries,
// then reads new ones with a blocking XREADGROUP, and dispatches what it
// reads. After a read error it re-reads its own pending list, which
// recovers entries a timed-out read delivered without the client seeing
// them. It reads no further ahead than the read-ahead budget allows.
type reader struct {
	e        *Engine
	blocking blockingReader
	exited   chan struct{} // closed when loop returns
	bo       backoff
	win      window // how many entries the next read may bring
	// last is the id of the last entry a read of new entries (">")
	// brought in this epoch; see checkReset.
	last string
	// afterCut is set while the reader takes a cut read's entries from its
	// pending list: each was delivered once by the cut read and counted
	// again by the re-read, which is no delivery to a handler. (An entry
	// XAUTOCLAIM moved here meanwhile is discounted too: it may be
	// delivered once more before MaxDeliveries.)
	afterCut bool
}

// start creates the group, from the stream's first entry (MKSTREAM), and on
// a partition just taken over first takes what previous owners left
// pending. Transient errors are retried until the engine stops, or, before
// the group was ever created, until StartTimeout; then start returns an
// error wrapping ErrStartTimeout and the last Redis error.
func (r *reader) start() error {
	e := r.e
	r.bo = backoff{base: e.p.ErrorBackoff, max: e.p.MaxErrorBackoff}
	var deadline time.Time
	if e.p.StartTimeout > 0 {
		deadline = e.p.Clock.Now().Add(e.p.StartTimeout)
	}
	if err := r.createGroup(deadline); err != nil {
		return err
	}
	if e.p.Adopt {
		return r.adopt()
	}
	return nil
}

// createGroup runs XGROUP CREATE ... MKSTREAM until it works (BUSYGROUP:
// it exists; OOM, and XINFO GROUPS lists it: it exists, and Redis is full). With a deadline, the first failure is logged at ERROR and
// Run gives up at the deadline.
func (r *reader) createGroup(deadline time.Time) error {
	e := r.e
	for attempt := 0; ; attempt++ {
		err := e.p.Client.XGroupCreateMkStream(e.ioCtx, e.p.Stream, e.p.Group, "0").Err()
		switch {
		case err == nil:
			e.log.Info("created consumer group")
			r.bo.reset()
			return nil
		case redis.HasErrorPrefix(err, "BUSYGROUP"):
			r.bo.reset()
			return nil
		case redis.HasErrorPrefix(err, "OOM") && r.groupExists():
			// Redis is full (maxmemory with noeviction) and refuses the
			// write before it would say BUSYGROUP; reads still work.
			e.log.Warn("Redis is out of memory; the consumer group exists, reading on", slog.Any("err", err))
			r.bo.reset()
			return nil
		case isFatal(err):
			return fmt.Errorf("%w: XGROUP CREATE %s %s: %w", e.p.ErrRedisFatal, e.p.Stream, e.p.Group, err)
		}
		if e.stopped() {
			return errStopped
		}
		if !deadline.IsZero() {
			if attempt == 0 {
				e.log.Error("cannot reach Redis to create the consumer group; retrying until StartTimeout (check the client's address, password and TLS settings)",
					slog.Any("err", err), slog.Duration("start_timeout", e.p.StartTimeout))
			}
			if !e.p.Clock.Now().Before(deadline) {
				return fmt.Errorf("%w: the consumer could not create or reach group %q of stream %q within StartTimeout (%v); check the Redis client's address, password and TLS settings: %w",
					e.p.ErrStartTimeout, e.p.Group, e.p.Stream, e.p.StartTimeout, err)
			}
			e.p.Stats.NoteRedisError(err, e.p.Clock.Now())
			e.observe(Event{Kind: EventRedisError, Err: err})
			e.setState(StateDegraded)
		} else if e.rep.fail("xgroup-create", err) {
			return e.fatalErr
		}
		if !clock.Sleep(e.p.Clock, e.stop, r.bo.next()) {
			return errStopped
		}
	}
}

// groupExists reports whether XINFO GROUPS lists the group (false on any
// error).
func (r *reader) groupExists() bool {
	e := r.e
	groups, err := e.p.Client.XInfoGroups(e.ioCtx, e.p.Stream).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name == e.p.Group {
			return true
		}
	}
	return false
}

// adopt moves to this consumer every entry the group still has pending in
// the partition, so that the read of the own pending list that follows
// handles them, in stream order, before any new entry.
func (r *reader) adopt() error {
	e := r.e
	cursor, moved := "0-0", 0
	for !e.stopped() {
		res, err := scripts.Adopt.Run(e.ioCtx, e.p.Client, []string{e.p.Stream},
			e.p.Group, e.p.Consumer, cursor, e.p.BatchSize).Slice()
		if err == nil {
			next, n, deleted, perr := parseAdopt(res)
			if err = perr; err == nil {
				moved += n
				if len(deleted) > 0 {
					e.reportDeleted(deleted)
				}
				if cursor = next; cursor == "0-0" || cursor == "" {
					if moved > 0 {
						e.log.Info("took over the entries previous owners left pending", slog.Int("count", moved))
					}
					return nil
				}
				r.bo.reset()
				continue
			}
		}
		switch classify(err) {
		case fatal:
			return fmt.Errorf("%w: XAUTOCLAIM %s %s: %w", e.p.ErrRedisFatal, e.p.Stream, e.p.Group, err)
		case noGroup:
			e.held.newEpoch()
			if err := r.createGroup(time.Time{}); err != nil {
				return err
			}
			cursor = "0-0"
			continue
		}
		e.rep.fail("adopt pending", err)
		if !clock.Sleep(e.p.Clock, e.stop, r.bo.next()) {
			break
		}
	}
	return errStopped
}

// parseAdopt reads the adopt script's reply.
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

// loop reads until the engine stops: the own pending list first (a
// previous life of this consumer may have crashed holding entries, or a
// client-side timeout may have left a delivered entry behind), then new
// entries; after a read error, the own pending list again.
func (r *reader) loop() {
	e := r.e
	defer close(r.exited)
	defer r.blocking.close()
	r.win = newWindow(e.p.MaxPayloadBytes)
	args := redis.XReadGroupArgs{Group: e.p.Group, Consumer: e.p.Consumer, Streams: []string{e.p.Stream, "0"}}
	ownPending, cursor := true, "0"
	for !e.stopped() {
		count, free, ok := r.room(!ownPending && r.blocking.capped())
		if !ok {
			return
		}
		args.Count = int64(count)
		msgs, err := r.next(&args, ownPending, cursor, free+replySlack)
		if err != nil {
			if errors.Is(err, errReplyCapped) {
				// The cut read's entries come after the last one read:
				// re-read from there, not the held entries before it.
				ownPending, cursor = true, r.cut(free, count)
				continue
			}
			if !r.recover(err) {
				return
			}
			if !errors.Is(err, redis.Nil) {
				ownPending, cursor, r.afterCut = true, "0", false
			}
			continue
		}
		r.bo.reset()
		e.rep.ok()
		r.win.observe(msgs, count, e.p.BatchSize)
		if !ownPending {
			r.checkReset(msgs)
			if e.State() == StateStarting {
				e.setState(StateRunning)
			}
			if !e.dispatch(e.decode(msgs, nil), false, false) {
				return
			}
			continue
		}
		if len(msgs) > 0 {
			var discount int64
			if r.afterCut {
				discount = 1
			}
			e.dispatchPending(msgs, false, discount)
			cursor = msgs[len(msgs)-1].ID
		}
		e.held.unguard()
		if len(msgs) < count {
			ownPending, r.afterCut = false, false
			if e.State() == StateStarting {
				e.setState(StateRunning)
			}
		}
	}
}

// cut handles a read whose reply outgrew the budget's free part (see
// capped.go): it plans smaller reads and returns where the re-read of the
// own pending list starts: after the last entry read, since every entry
// the cut read delivered comes after it.
func (r *reader) cut(free int64, asked int) string {
	e := r.e
	r.win.capped(free, asked)
	r.afterCut = true
	e.signal("read-capped")
	e.log.Debug("a read's reply outgrew the read-ahead budget's free part; taking its entries from the pending list",
		slog.Int("count", asked), slog.Int64("free_bytes", free))
	if r.last == "" {
		return "0"
	}
	return r.last
}

// checkReset notices a group reset behind the reader's back. A read of
// new entries (">") brings only entries after every one the group
// delivered before, so an id not after the last one read means that the
// stream was deleted and recreated (another consumer saw the deletion and
// recreated the group; this one was not blocked in a read at that moment,
// so it got no error), or that XGROUP SETID moved the group back. The
// entries held are then of the old stream, and a new entry added in the
// deletion's millisecond can have the id of one of them: taken for a
// re-read of the held entry, it would be dropped, and acknowledged
// unhandled when the held one finished. The read starts a new epoch
// instead, as a NOGROUP error does: what is held is forgotten (its
// acknowledgements dropped), and this read's entries are tracked afresh.
func (r *reader) checkReset(msgs []redis.XMessage) {
	if len(msgs) == 0 {
		return
	}
	if r.last != "" && !idAfter(msgs[0].ID, r.last) {
		r.e.log.Warn("the group was reset (a read of new entries returned an id not after the last one read: the stream was deleted and recreated, or XGROUP SETID moved the group back); forgetting the entries held, which are redelivered if they still exist",
			slog.String("id", msgs[0].ID), slog.String("last", r.last))
		r.e.held.newEpoch()
	}
	r.last = msgs[len(msgs)-1].ID
}

// idAfter reports whether stream id a comes after b. Ids it cannot parse
// count as after (no reset is assumed).
func idAfter(a, b string) bool {
	ams, aseq, okA := splitID(a)
	bms, bseq, okB := splitID(b)
	if !okA || !okB {
		return true
	}
	return ams > bms || (ams == bms && aseq > bseq)
}

func splitID(id string) (ms, seq uint64, ok bool) {
	i := strings.IndexByte(id, '-')
	if i < 0 {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(id[:i], 10, 64)
	seq, err2 := strconv.ParseUint(id[i+1:], 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// next reads the next batch: of the own pending list from cursor (no
// BLOCK: a history read returns at once; guarded until its entries are
// tracked, see held.acked), or of new entries.
func (r *reader) next(args *redis.XReadGroupArgs, ownPending bool, cursor string, limit int64) ([]redis.XMessage, error) {
	e := r.e
	if !ownPending {
		args.Streams[1], args.Block = ">", e.p.Block
		return r.read(args, true, limit)
	}
	args.Streams[1], args.Block = cursor, -1
	e.held.guard()
	msgs, err := r.read(args, false, 0)
	if err != nil {
		e.held.unguard()
	}
	return msgs, err
}

// recover handles a read error and reports whether to read on: a read
// that found nothing (the BLOCK ran out) is no error; a deleted stream or
// group is recreated; other errors are reported and waited out.
func (r *reader) recover(err error) bool {
	e := r.e
	if errors.Is(err, redis.Nil) {
		e.rep.ok()
		return true
	}
	if e.stopped() {
		return false
	}
	switch classify(err) {
	case fatal:
		e.rep.fail("xreadgroup", err)
		return false
	case noGroup:
		e.log.Warn("stream or group is gone (deleted, expired or flushed); recreating the group from the first entry", slog.Any("err", err))
		e.held.newEpoch()
		r.last = ""
		return r.createGroup(time.Time{}) == nil
	}
	e.rep.fail("xreadgroup", err)
	return clock.Sleep(e.p.Clock, e.stop, r.bo.next())
}

// room waits until the queue is down to about one read's worth beyond
// what the workers take next (so that they do not wait for the read that
// follows) and the read-ahead budget has room, and returns how many
// entries the next read may bring (see window; capped: the read's reply is
// capped at the free bytes, see capped.go) and the budget's free bytes: at
// least one entry when nothing is held. It returns false when the engine
// stops.
func (r *reader) room(capped bool) (int, int64, bool) {
	e := r.e
	if !e.queue.waitBelow(e.p.Concurrency + r.win.limit) {
		return 0, 0, false
	}
	for {
		free := e.p.MaxReadAheadBytes - e.held.heldBytes()
		n := r.win.count(free, e.p.BatchSize)
		if capped {
			n = r.win.cappedCount(free, e.p.BatchSize)
		}
		if n >= 1 || e.held.count.Load() == 0 {
			return max(n, 1), max(free, 0), true
		}
		select {
		case <-e.held.room:
		case <-e.stop:
			return 0, 0, false
		}
	}
}

// read issues the XREADGROUP: history reads through the client, blocking
// ones through the interruptible reader.
func (r *reader) read(args *redis.XReadGroupArgs, blocking bool, limit int64) ([]redis.XMessage, error) {
	e := r.e
	var streams []redis.XStream
	var err error
	if blocking {
		var openErr error
		streams, openErr, err = r.blocking.read(e.ioCtx, args, limit)
		if openErr != nil && !e.stopped() {
			e.rep.fail("open reader connection", openErr)
		}
	} else {
		streams, err = e.p.Client.XReadGroup(e.ioCtx, args).Result()
	}
	if err != nil || len(streams) == 0 {
		return nil, err
	}
	return streams[0].Messages, nil
}

// interrupt ends a blocked XREADGROUP with CLIENT UNBLOCK, repeating until
// the reader has returned (the read may not have been sent yet when the
// first UNBLOCK goes out), for at most Block and a second.
func (r *reader) interrupt() {
	e := r.e
	e.jobs.goJob("interrupt", func() {
		ctx, cancel := context.WithTimeout(e.ioCtx, e.p.Block+time.Second)
		defer cancel()
		for {
			owner, id := r.blocking.target()
			if err := unblock(ctx, owner, id); err != nil {
				e.log.Info("cannot interrupt the blocked read (CLIENT UNBLOCK refused); stopping once it times out", slog.Any("err", err), slog.Duration("block", e.p.Block))
				return
			}
			t := e.p.Clock.NewTimer(20 * time.Millisecond)
			select {
			case <-r.exited:
				t.Stop()
				return
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
	})
}
