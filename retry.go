package completion

import (
	"container/heap"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// retryQueue is a min-heap of deliveries by retryAt. Guarded by run.mu.
type retryQueue []*delivery

func (q retryQueue) Len() int           { return len(q) }
func (q retryQueue) Less(i, j int) bool { return q[i].retryAt.Before(q[j].retryAt) }
func (q retryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].retryIdx, q[j].retryIdx = i, j
}
func (q *retryQueue) Push(x any) {
	d := x.(*delivery)
	d.retryIdx = len(*q)
	*q = append(*q, d)
}
func (q *retryQueue) Pop() any {
	old := *q
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	d.retryIdx = -1
	return d
}

func (q *retryQueue) remove(d *delivery) {
	if d.retryIdx >= 0 && d.retryIdx < len(*q) && (*q)[d.retryIdx] == d {
		heap.Remove(q, d.retryIdx)
	}
	d.retryIdx = -1
}

// scheduleRetry keeps d pending and delivers it again after delay, with
// XCLAIM, which also counts the delivery in Redis. While it waits, d holds
// no worker, so failing entries never crowd out healthy ones.
func (r *run) scheduleRetry(d *delivery, delay time.Duration) {
	r.mu.Lock()
	// At most BatchSize entries wait here, so a failing downstream cannot
	// make one consumer hold the stream in memory. Beyond that a failed
	// entry is simply left pending, and XAUTOCLAIM delivers it again after
	// ClaimMinIdle (here or on another consumer).
	if len(r.retries) >= r.cfg.BatchSize {
		delete(r.tracked, d.id)
		r.inFlight.Store(int64(len(r.tracked)))
		r.mu.Unlock()
		return
	}
	d.retryAt = now().Add(delay)
	heap.Push(&r.retries, d)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// retryLoop delivers scheduled retries when they are due, until the run
// stops. Retries still waiting then stay pending in Redis.
func (r *run) retryLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		var due []*delivery
		t := now()
		for len(r.retries) > 0 && !r.retries[0].retryAt.After(t) {
			d := heap.Pop(&r.retries).(*delivery)
			d.retryIdx = claiming // the leaser leaves it alone
			due = append(due, d)
		}
		next := time.Hour
		if len(r.retries) > 0 {
			next = r.retries[0].retryAt.Sub(t)
		}
		r.mu.Unlock()
		for _, d := range due {
			r.redeliver(d)
		}
		timer.Reset(next)
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// redeliver claims d back from Redis and hands it to a worker. XCLAIM's
// MIN-IDLE makes sure no other consumer claimed the entry since this one
// last touched it: if someone did, it is theirs now.
func (r *run) redeliver(d *delivery) {
	if r.stopped() {
		r.forget(d) // stays pending
		return
	}
	var msgs []redis.XMessage
	var err error
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		touched, current := d.touched, d.epoch == r.epoch
		r.mu.Unlock()
		if !current { // its stream was deleted meanwhile
			return
		}
		minIdle := now().Sub(touched) - 5*time.Millisecond
		if minIdle < 0 {
			minIdle = 0
		}
		msgs, err = r.c.client.XClaim(r.ioCtx, &redis.XClaimArgs{
			Stream: r.cfg.Stream, Group: r.cfg.Group, Consumer: r.cfg.Consumer,
			MinIdle: minIdle, Messages: []string{d.id},
		}).Result()
		if err != nil || len(msgs) > 0 || attempt > 0 {
			break
		}
		// Nothing claimed: if this consumer itself reset the entry's idle
		// time meanwhile (a lease renewal, a re-read of its pending list),
		// touched moved on; claim again with it.
		r.mu.Lock()
		moved := d.touched != touched
		r.mu.Unlock()
		if !moved {
			break
		}
	}
	if err != nil {
		// Leave it pending: XAUTOCLAIM picks it up after ClaimMinIdle.
		r.redisError("xclaim", err, slog.String("id", d.id))
		r.forget(d)
		return
	}
	if len(msgs) == 0 || msgs[0].Values == nil {
		r.forget(d)
		// Redis 7 answers nothing both for an entry someone else holds and
		// for one trimmed while pending (which XCLAIM also drops from the
		// pending list): ask the stream which.
		if gone, err := r.entryGone(d.id); err == nil && gone {
			r.reportDeleted([]string{d.id})
		} else {
			r.log.Info("entry due for retry is no longer ours (claimed by another consumer, or handled)", slog.String("id", d.id))
		}
		return
	}
	r.mu.Lock()
	d.values = msgs[0].Values
	d.count++
	d.touched = now()
	d.retryIdx = notQueued
	r.mu.Unlock()
	r.c.stats.delivered.Add(1)
	select {
	case r.queueFor(d) <- d:
	case <-r.stop:
		r.forget(d)
	}
}

// entryGone reports whether the entry id is no longer in the stream.
func (r *run) entryGone(id string) (bool, error) {
	msgs, err := r.c.client.XRange(r.ioCtx, r.cfg.Stream, id, id).Result()
	return err == nil && len(msgs) == 0, err
}
