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
// It returns the next cursor, how many entries it examined that came back,
// and false on error.
func (r *run) claimOnce(cursor string) (string, int, bool) {
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
	if len(deleted) > 0 {
		r.reportDeleted(deleted)
	}
	live := msgs[:0:0]
	for _, m := range msgs {
		if m.Values == nil { // deleted, on servers that report it this way
			r.reportDeleted([]string{m.ID})
			continue
		}
		live = append(live, m)
	}
	if len(live) > 0 {
		r.log.Info("claimed stale pending entries", slog.Int("count", len(live)), slog.String("first_id", live[0].ID))
		ds := r.newDeliveries(live, r.deliveryCounts(live))
		for i := range ds {
			d := &ds[i]
			if r.dispatch(d, true) {
				r.c.stats.reclaimed.Add(1)
				r.observeDelivery(EventReclaimed, d)
			} else if r.stopped() {
				break
			}
		}
	}
	if next == "" {
		next = "0-0"
	}
	return next, len(msgs) + len(deleted), true
}
