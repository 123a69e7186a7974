package engine

import (
	"context"
	"log/slog"

	"github.com/streamrelay/completion/internal/scripts"
)

// leaser renews, every LeaseInterval, the claim on the entries the engine
// holds (queued, being handled, or waiting for their acknowledgement), so
// that no other consumer takes them over while a handler is slow. Entries
// waiting for a retry are not renewed: if their wait outlasts ClaimMinIdle,
// another consumer may deliver them, which is as good. An entry it finds
// held by another consumer, or acknowledged while this one had not
// finished it (another consumer took it over and finished it while this
// process was paused), is lost: counted once, its handler's context
// cancelled, and it is neither renewed nor retried or dead-lettered here.
type leaser struct {
	e    *Engine
	quit chan struct{}
}

// stopNow stops the leaser (after the handlers finished).
func (l *leaser) stopNow() { close(l.quit) }

func (l *leaser) run() {
	e := l.e
	ticker := e.p.Clock.NewTimer(e.p.LeaseInterval)
	defer ticker.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-ticker.C():
			ticker.Reset(e.p.LeaseInterval)
		}
		l.renew()
		e.signal("leaser")
	}
}

// renew renews what was last touched half an interval ago or earlier, so
// that an entry's idle time stays under 1.5 LeaseInterval (half of
// ClaimMinIdle by default).
func (l *leaser) renew() {
	e := l.e
	ids := e.held.toRenew(e.now() - int64(e.p.LeaseInterval/2))
	if len(ids) == 0 {
		return
	}
	if _, err := e.lease(ids, false); err != nil {
		e.rep.fail("lease", err)
		return
	}
	e.rep.ok()
}

// leaseResult is what the lease script found: ids another consumer holds
// (taken), and ids no longer pending that the stream still has (acked).
type leaseResult struct {
	taken, acked map[string]bool
}

// lease runs the lease script over ids, records its findings in the held
// set (see held.renewed; byAcker: the acker asks, before its XACK), and
// reports the entries newly lost (counted, their handlers cancelled). It
// returns them.
func (e *Engine) lease(ids []any, byAcker bool) ([]*Delivery, error) {
	ctx, cancel := context.WithTimeout(e.ioCtx, e.p.LeaseInterval)
	defer cancel()
	sent := e.now()
	args := append([]any{e.p.Group, e.p.Consumer}, ids...)
	reply, err := scripts.Lease.Run(ctx, e.p.Client, []string{e.p.Stream}, args...).Slice()
	if err != nil {
		return nil, err
	}
	var res leaseResult
	if len(reply) == 2 {
		res.taken, res.acked = idSet(reply[0]), idSet(reply[1])
	}
	newly := e.held.renewed(ids, res, sent, byAcker)
	if len(newly) > 0 {
		e.leaser.lost(newly)
	}
	return newly, nil
}

// idSet returns the strings of a script's array reply as a set.
func idSet(v any) map[string]bool {
	l, _ := v.([]any)
	if len(l) == 0 {
		return nil
	}
	m := make(map[string]bool, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			m[s] = true
		}
	}
	return m
}

// lost reports entries found taken over (or finished) by another
// consumer, once each, and cancels the handlers running them.
func (l *leaser) lost(ds []*Delivery) {
	e := l.e
	e.p.Stats.LeasesLost.Add(int64(len(ds)))
	for _, d := range ds {
		e.observe(Event{Kind: EventLeaseLost, EntryID: d.ID})
		for _, w := range e.workers {
			w.cancelIf(d)
		}
	}
	e.log.Warn("another consumer took over entries this one holds; their handlers are cancelled, and those that had started may run twice (is ClaimMinIdle too short, or was this process paused?)",
		slog.Int("count", len(ds)), slog.String("first_id", ds[0].ID), slog.Duration("claim_min_idle", e.p.ClaimMinIdle))
}
