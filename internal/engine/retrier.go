package engine

import (
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// retrier delivers failed entries again once their backoff is over. A
// failing entry waits here, not in a worker, so it never crowds out healthy
// ones. It claims each back with XCLAIM, whose MIN-IDLE makes sure no other
// consumer claimed the entry since this one last touched it (if one did, it
// is theirs now), and which counts the delivery in Redis.
type retrier struct {
	e    *Engine
	wake chan struct{}
}

// schedule keeps d pending and delivers it again after delay.
func (r *retrier) schedule(d *Delivery, delay time.Duration, cause error) {
	e := r.e
	// The event is taken first: once scheduled, d belongs to the retrier,
	// which may claim it back (and count a delivery) at once.
	ev := EventOf(EventRetryScheduled, d)
	ev.Delay, ev.Err = delay, cause
	if !e.held.schedule(d, e.now()+int64(delay), e.p.BatchSize) {
		return // at most BatchSize wait: this one waits in Redis, for XAUTOCLAIM
	}
	e.p.Stats.Retried.Add(1)
	e.observe(ev)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *retrier) run() {
	e := r.e
	timer := e.p.Clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := e.held.due(e.now())
		for _, d := range due {
			r.redeliver(d)
		}
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(next - e.now())
		}
		timer.Reset(wait)
		e.signal("retrier")
		select {
		case <-e.stop:
			return
		case <-r.wake:
		case <-timer.C():
		}
	}
}

// redeliver claims d back from Redis and hands it to a worker. An entry
// gone from the stream (trimmed while it waited) is handed over from
// memory: this copy is all that is left of it.
func (r *retrier) redeliver(d *Delivery) {
	e := r.e
	if e.stopped() {
		e.held.forget(d) // stays pending
		return
	}
	if _, current := e.held.touchedAt(d); !current {
		return // its stream was deleted meanwhile: forgotten already
	}
	if e.held.isGone(d) {
		r.handOver(d, d.Fields)
		return
	}
	msgs, err := r.claim(d)
	if err != nil {
		// Leave it pending: XAUTOCLAIM picks it up after ClaimMinIdle.
		e.rep.fail("xclaim", err, slog.String("id", d.ID))
		e.held.forget(d)
		return
	}
	if len(msgs) == 0 || msgs[0].Values == nil {
		// Redis 7 answers nothing both for an entry someone else holds and
		// for one trimmed while pending (which XCLAIM also drops from the
		// pending list): ask the stream which.
		if gone, err := r.entryGone(d.ID); err == nil && gone {
			e.held.goneUnlessHeld([]string{d.ID}) // marks it gone
			r.handOver(d, d.Fields)
			return
		}
		e.held.forget(d)
		e.log.Info("entry due for retry is no longer ours (claimed by another consumer, or handled)", slog.String("id", d.ID))
		return
	}
	r.handOver(d, msgs[0].Values)
}

// claim runs the XCLAIM of d, with the idle time this consumer last left
// it at, once more if a renewal moved that meanwhile.
func (r *retrier) claim(d *Delivery) ([]redis.XMessage, error) {
	e := r.e
	for attempt := 0; ; attempt++ {
		touched, current := e.held.touchedAt(d)
		if !current { // its stream was deleted meanwhile
			return nil, nil
		}
		minIdle := max(time.Duration(e.now()-touched)-5*time.Millisecond, 0)
		msgs, err := e.p.Client.XClaim(e.ioCtx, &redis.XClaimArgs{
			Stream: e.p.Stream, Group: e.p.Group, Consumer: e.p.Consumer,
			MinIdle: minIdle, Messages: []string{d.ID},
		}).Result()
		if err != nil || len(msgs) > 0 || attempt > 0 {
			return msgs, err
		}
		// Nothing claimed: if this consumer itself reset the entry's idle
		// time meanwhile (a lease renewal, a re-read of its pending list),
		// touched moved on; claim again with it.
		if now, _ := e.held.touchedAt(d); now == touched {
			return nil, nil
		}
	}
}

// handOver queues d again, claimed back with fields.
func (r *retrier) handOver(d *Delivery, fields map[string]any) {
	e := r.e
	if !e.held.claimedBack(d, fields, e.now()) {
		return
	}
	e.p.Stats.Delivered.Add(1)
	if !e.queue.push([]*Delivery{d}) {
		e.held.forget(d)
	}
}

// entryGone reports whether the entry id is no longer in the stream.
func (r *retrier) entryGone(id string) (bool, error) {
	msgs, err := r.e.p.Client.XRange(r.e.ioCtx, r.e.p.Stream, id, id).Result()
	return err == nil && len(msgs) == 0, err
}
