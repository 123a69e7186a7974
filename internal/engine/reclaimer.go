package engine

import (
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/clock"
)

// reclaimer takes over, every ClaimInterval, entries that other consumers
// (crashed pods, or this consumer's own earlier life) left pending longer
// than ClaimMinIdle. It follows XAUTOCLAIM's cursor through the pending list
// instead of starting at 0-0 each time, which could starve entries further
// on (one call examines at most COUNT*10 pending entries).
type reclaimer struct {
	e      *Engine
	cursor string
	epoch  uint64
	win    window // how many entries one XAUTOCLAIM may bring
}

func (r *reclaimer) run() {
	e := r.e
	r.cursor = "0-0"
	r.win = newWindow(e.p.MaxPayloadBytes)
	for {
		if epoch := e.held.currentEpoch(); epoch != r.epoch { // the stream was recreated: start over
			r.epoch, r.cursor = epoch, "0-0"
		}
		// Keep claiming while full batches come back.
		for !e.stopped() {
			count := r.win.count(e.p.MaxReadAheadBytes-e.held.heldBytes(), e.p.BatchSize)
			if count < 1 && e.held.count.Load() > 0 {
				break // the read-ahead budget is spent: claim next time
			}
			count = max(count, 1)
			n, ok := r.claimOnce(count)
			if !ok || n < count || r.cursor == "0-0" {
				break
			}
		}
		e.signal("reclaimer")
		if !clock.Sleep(e.p.Clock, e.stop, e.p.ClaimInterval) {
			return
		}
	}
}

// claimOnce runs one XAUTOCLAIM of up to count entries from the cursor and
// dispatches what it claimed. It returns how many entries came back, and
// false on error.
func (r *reclaimer) claimOnce(count int) (int, bool) {
	e := r.e
	e.held.guard() // until its entries are tracked: see held.acked
	defer e.held.unguard()
	msgs, next, deleted, err := e.p.Client.XAutoClaimWithDeleted(e.ioCtx, &redis.XAutoClaimArgs{
		Stream: e.p.Stream, Group: e.p.Group, Consumer: e.p.Consumer,
		MinIdle: e.p.ClaimMinIdle, Start: r.cursor, Count: int64(count),
	}).Result()
	if err != nil {
		switch {
		case e.stopped():
		case classify(err) == fatal:
			e.fail(fmt.Errorf("%w: XAUTOCLAIM %s %s: %w", e.p.ErrRedisFatal, e.p.Stream, e.p.Group, err))
		case classify(err) == noGroup: // the reader recreates the group
		default:
			e.rep.fail("xautoclaim", err)
		}
		r.cursor = "0-0"
		return 0, false
	}
	e.rep.ok()
	r.win.observe(msgs, count, e.p.BatchSize)
	if len(deleted) > 0 {
		e.reportDeletedUnlessHeld(deleted)
	}
	if len(msgs) > 0 {
		e.log.Info("claimed stale pending entries", slog.Int("count", len(msgs)), slog.String("first_id", msgs[0].ID))
		e.dispatchPending(msgs, true, 0) // also reports those it returns without fields: deleted
	}
	if r.cursor = next; r.cursor == "" {
		r.cursor = "0-0"
	}
	return len(msgs) + len(deleted), true
}
