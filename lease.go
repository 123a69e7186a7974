package completion

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/streamrelay/completion/internal/scripts"
)

// leaser renews, every LeaseInterval, the claim on entries this run holds:
// queued, running, or waiting for their
// acknowledgement. Entries waiting for a retry are not renewed: if their
// wait outlasts ClaimMinIdle, another consumer may deliver them, which is
// as good.
func (r *run) leaser(stop <-chan struct{}) {
	t := time.NewTicker(r.cfg.LeaseInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		// Renew what was last touched half an interval ago or earlier, so
		// an entry's idle time stays under 1.5 LeaseInterval (half of
		// ClaimMinIdle by default).
		cutoff := now().Add(-r.cfg.LeaseInterval / 2)
		r.mu.Lock()
		var ids []any
		for id, d := range r.tracked {
			if d.retryIdx == notQueued && !d.touched.After(cutoff) {
				ids = append(ids, id)
			}
		}
		r.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ioCtx, r.cfg.LeaseInterval)
		args := append([]any{r.cfg.Group, r.cfg.Consumer}, ids...)
		lost, err := scripts.Lease.Run(ctx, r.c.client, []string{r.cfg.Stream}, args...).StringSlice()
		cancel()
		if err != nil {
			r.redisError("lease", err)
			continue
		}
		renewedAt := now()
		lostSet := make(map[string]bool, len(lost))
		for _, id := range lost {
			lostSet[id] = true
		}
		r.mu.Lock()
		for _, v := range ids {
			if d, ok := r.tracked[v.(string)]; ok && !lostSet[d.id] {
				d.touched = renewedAt
			}
		}
		r.mu.Unlock()
		if len(lost) > 0 {
			r.c.stats.leasesLost.Add(int64(len(lost)))
			for _, id := range lost {
				r.observe(Event{Kind: EventLeaseLost, EntryID: id})
			}
			r.log.Warn("another consumer took over entries this one is still handling; their handlers may run twice (is ClaimMinIdle too short, or was this process paused?)",
				slog.Int("count", len(lost)), slog.String("first_id", lost[0]))
		}
	}
}

// removeStaleConsumers removes departed consumers from the group.
func (r *run) removeStaleConsumers() {
	deleted, err := scripts.StaleConsumers.Run(r.ioCtx, r.c.client, []string{r.cfg.Stream},
		r.cfg.Group, strconv.FormatInt(r.cfg.StaleConsumerAge.Milliseconds(), 10), r.cfg.Consumer).StringSlice()
	if err != nil {
		if !isNoGroup(err) && !r.stopped() {
			r.redisError("remove-stale-consumers", err)
		}
		return
	}
	if len(deleted) > 0 {
		r.log.Info("removed departed consumers from the group", slog.Any("consumers", deleted))
	}
}

// removeSelf deletes this consumer from the group at a clean shutdown when
// it holds nothing; a consumer with pending entries stays, so that another
// can claim them.
func (r *run) removeSelf() {
	ctx, cancel := context.WithTimeout(r.ioCtx, finalAckTimeout)
	defer cancel()
	n, err := scripts.RemoveSelf.Run(ctx, r.c.client, []string{r.cfg.Stream}, r.cfg.Group, r.cfg.Consumer).Int64()
	switch {
	case err != nil:
		if !isNoGroup(err) {
			r.log.Debug("could not remove this consumer from the group", slog.Any("err", err))
		}
	case n < 0:
		r.log.Info("stopping with entries still pending; another consumer will claim them after ClaimMinIdle")
	}
}
