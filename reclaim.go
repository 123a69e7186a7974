package completion

import (
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// reclaimer takes over entries that other consumers (crashed pods, or this
// consumer's own earlier life) left pending longer than ClaimMinIdle, every
// ClaimInterval, and now and then removes departed consumers from the group.
// It follows XAUTOCLAIM's cursor through the pending list instead of
// starting at 0-0 each time, which could starve entries further on (one
// call examines at most COUNT*10 pending entries).
func (r *run) reclaimer() {
	cursor := "0-0"
	epoch := uint64(0)
	cleanupEvery := max(1, int(r.cfg.StaleConsumerAge/r.cfg.ClaimInterval/4))
	for tick := 0; ; tick++ {
		if tick%cleanupEvery == 0 {
			r.removeStaleConsumers()
		}
		r.mu.Lock()
		if r.epoch != epoch { // the stream was recreated: start over
			epoch, cursor = r.epoch, "0-0"
		}
		r.mu.Unlock()
		// Keep claiming while full batches come back.
		for !r.stopped() {
			next, n, ok := r.claimOnce(cursor)
			if !ok {
				break
			}
			cursor = next
			if n < r.cfg.BatchSize || cursor == "0-0" {
				break
			}
		}
		if !sleep(r.stop, r.cfg.ClaimInterval) {
			return
		}
	}
}

// claimOnce runs one XAUTOCLAIM from cursor and dispatches what it claimed.
// It returns the next cursor, how many entries came back, and false on
// error.
func (r *run) claimOnce(cursor string) (string, int, bool) {
	r.guard() // until its entries are tracked: see run.acked
	defer r.unguard()
	msgs, next, deleted, err := r.c.client.XAutoClaimWithDeleted(r.ioCtx, &redis.XAutoClaimArgs{
		Stream: r.cfg.Stream, Group: r.cfg.Group, Consumer: r.cfg.Consumer,
		MinIdle: r.cfg.ClaimMinIdle, Start: cursor, Count: int64(r.cfg.BatchSize),
	}).Result()
	if err != nil {
		if r.stopped() {
			return cursor, 0, false
		}
		if isFatal(err) {
			r.fail(fmt.Errorf("%w: XAUTOCLAIM %s %s: %w", ErrRedisFatal, r.cfg.Stream, r.cfg.Group, err))
			return cursor, 0, false
		}
		if !isNoGroup(err) { // the reader recreates the group
			r.redisError("xautoclaim", err)
		}
		return "0-0", 0, false
	}
	live := msgs[:0:0]
	for _, m := range msgs {
		if m.Values == nil { // deleted, on servers that report it this way
			deleted = append(deleted, m.ID)
			continue
		}
		live = append(live, m)
	}
	if len(deleted) > 0 {
		r.reportDeletedUnlessHeld(deleted)
	}
	if len(live) > 0 {
		r.log.Info("claimed stale pending entries", slog.Int("count", len(live)), slog.String("first_id", live[0].ID))
		r.dispatchReclaimed(live, true)
	}
	if next == "" {
		next = "0-0"
	}
	return next, len(msgs) + len(deleted), true
}

// reportDeletedUnlessHeld reports the entries XAUTOCLAIM found deleted from
// the stream, except those this consumer holds in memory and is handling:
// Redis drops every deleted entry from the pending list, whoever holds it,
// but a held one is not lost. (Another consumer may likewise still complete
// an entry counted here.) An entry waiting here for its retry is lost: it is
// forgotten and counted.
func (r *run) reportDeletedUnlessHeld(ids []string) {
	lost := ids[:0:0]
	r.mu.Lock()
	for _, id := range ids {
		d, ok := r.tracked[id]
		switch {
		case !ok:
			lost = append(lost, id)
		case d.retryIdx >= 0:
			// Waiting for its retry: gone for good. Out of the queue and
			// the held set in one step, so the retry never runs.
			lost = append(lost, id)
			r.retries.remove(d)
			delete(r.tracked, id)
		}
	}
	r.inFlight.Store(int64(len(r.tracked)))
	r.mu.Unlock()
	if len(lost) > 0 {
		r.reportDeleted(lost)
	}
}
