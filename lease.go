package completion

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// leaseScript renews this consumer's claim on entries it still owns: for
// each id, if XPENDING says this consumer holds it, XCLAIM ... JUSTID resets
// its idle time (without counting a delivery), so XAUTOCLAIM elsewhere does
// not take it. Entries owned by someone else are not touched; their ids are
// returned. Entries no longer pending at all (acknowledged meanwhile, by
// this consumer's acker or after a reclaim elsewhere, or trimmed) are
// skipped: the acker or the reclaimer reports those.
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids.
var leaseScript = redis.NewScript(`
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(lost, ARGV[i])
    end
  end
end
return lost
`)

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
		lost, err := leaseScript.Run(ctx, r.c.client, []string{r.cfg.Stream}, args...).StringSlice()
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

// staleConsumersScript deletes the group's consumers, other than ARGV[3],
// that hold no pending entries and have been idle for at least ARGV[2] ms.
// Checking and deleting in one script means a consumer that holds entries is
// never deleted (XGROUP DELCONSUMER would drop them).
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] min idle ms, ARGV[3] this consumer.
var staleConsumersScript = redis.NewScript(`
local deleted = {}
local minIdle = tonumber(ARGV[2])
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] and f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] and f['idle'] >= minIdle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    table.insert(deleted, f['name'])
  end
end
return deleted
`)

// removeStaleConsumers removes departed consumers from the group.
func (r *run) removeStaleConsumers() {
	deleted, err := staleConsumersScript.Run(r.ioCtx, r.c.client, []string{r.cfg.Stream},
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

// removeSelfScript deletes consumer ARGV[2] if it holds no pending entries.
var removeSelfScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
`)

// removeSelf deletes this consumer from the group at a clean shutdown when
// it holds nothing; a consumer with pending entries stays, so that another
// can claim them.
func (r *run) removeSelf() {
	ctx, cancel := context.WithTimeout(r.ioCtx, finalAckTimeout)
	defer cancel()
	n, err := removeSelfScript.Run(ctx, r.c.client, []string{r.cfg.Stream}, r.cfg.Group, r.cfg.Consumer).Int64()
	switch {
	case err != nil:
		if !isNoGroup(err) {
			r.log.Debug("could not remove this consumer from the group", slog.Any("err", err))
		}
	case n < 0:
		r.log.Info("stopping with entries still pending; another consumer will claim them after ClaimMinIdle")
	}
}
