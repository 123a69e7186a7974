package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/clock"
)

// acker settles deliveries in batches: for up to BatchSize of them, at most
// AckDelay after the first was added, it writes their duplicate-suppression
// records, then sends one pipeline with one XACK and the dead-letter moves.
// A failed batch is retried with backoff (every step is idempotent); the
// entries stay pending meanwhile, so at worst they are delivered again. It
// holds at most BatchSize deliveries besides the batch being sent: workers
// wait beyond that, so a Redis that stops answering cannot make the engine
// hold more.
type acker struct {
	e *Engine

	mu      sync.Mutex
	buf     []*Delivery
	notFull *sync.Cond
	closed  bool // no more deliveries are taken: they stay pending
	kick    chan struct{}

	finishing chan time.Time // the deadline of the final flush
	exited    chan struct{}
}

func newAcker(e *Engine) *acker {
	a := &acker{e: e, kick: make(chan struct{}, 1), finishing: make(chan time.Time, 1), exited: make(chan struct{})}
	a.notFull = sync.NewCond(&a.mu)
	return a
}

// add queues d's acknowledgement (or move). It waits while BatchSize
// deliveries wait already; once the acker has finished, d is forgotten:
// it stays pending.
func (a *acker) add(d *Delivery) {
	a.mu.Lock()
	for len(a.buf) >= a.e.p.BatchSize && !a.closed {
		a.notFull.Wait()
	}
	if a.closed {
		a.mu.Unlock()
		a.e.held.forget(d)
		return
	}
	a.buf = append(a.buf, d)
	first, full := len(a.buf) == 1, len(a.buf) >= a.e.p.BatchSize
	a.mu.Unlock()
	if first || full {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// take returns what waits and empties the buffer.
func (a *acker) take(into []*Delivery) []*Delivery {
	a.mu.Lock()
	into = append(into, a.buf...)
	clear(a.buf)
	a.buf = a.buf[:0]
	a.notFull.Broadcast()
	a.mu.Unlock()
	return into
}

func (a *acker) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.buf)
}

// finish makes the acker send what it holds, with what remains until
// deadline, and waits (until then) for it to return.
func (a *acker) finish(deadline time.Time) {
	a.finishing <- deadline
	timer := a.e.p.Clock.NewTimer(finalTimeout(a.e.p.Clock.Now(), deadline))
	defer timer.Stop()
	select {
	case <-a.exited:
	case <-timer.C():
	}
}

func (a *acker) run() {
	e := a.e
	defer close(a.exited)
	bo := backoff{base: e.p.ErrorBackoff, max: e.p.MaxErrorBackoff}
	timer := e.p.Clock.NewTimer(time.Hour)
	timer.Stop()
	var batch []*Delivery
	for {
		select {
		case <-a.kick:
			if a.size() < e.p.BatchSize {
				timer.Reset(e.p.AckDelay)
				continue
			}
			timer.Stop()
		case <-timer.C():
		case deadline := <-a.finishing:
			timer.Stop()
			a.mu.Lock()
			a.closed = true
			a.notFull.Broadcast()
			a.mu.Unlock()
			batch = a.take(batch[:0])
			ctx, cancel := context.WithDeadline(e.ioCtx, deadline)
			if rest, op, err := a.send(ctx, batch); err != nil {
				e.rep.fail(op, err)
				e.held.forget(rest...) // they stay pending and are delivered again
			}
			cancel()
			return
		}
		batch = a.take(batch[:0])
		for len(batch) > 0 {
			rest, op, err := a.send(e.ioCtx, batch)
			batch = append(batch[:0], rest...)
			if err == nil {
				bo.reset()
				break
			}
			if e.rep.fail(op, err) {
				e.held.forget(batch...)
				batch = batch[:0]
				break
			}
			// Retry what failed; take in what arrived meanwhile.
			if !clock.Sleep(e.p.Clock, e.stop, bo.next()) {
				e.held.forget(batch...) // the final flush is for what waits in buf
				batch = batch[:0]
				break
			}
			batch = a.take(batch)
		}
	}
}

// send settles the deliveries of the current epoch in batch (an entry read
// before its stream was deleted is gone, and its id may now name a new
// entry): first their duplicate-suppression records and the dead letters of
// two-step moves, then one pipeline with the XACK and the move scripts.
// Settled deliveries are done; it returns the rest, with the step that
// failed and its error, to be retried.
func (a *acker) send(ctx context.Context, batch []*Delivery) ([]*Delivery, string, error) {
	e := a.e
	epoch := e.held.currentEpoch()
	atomic := e.atomicMoves()
	var plain, twoStep, scripted, stale, recorded []*Delivery
	for _, d := range batch {
		switch {
		case d.epoch != epoch:
			stale = append(stale, d)
		case d.dl == nil:
			plain = append(plain, d)
			if d.record != "" {
				recorded = append(recorded, d)
			}
		case atomic:
			scripted = append(scripted, d)
		default:
			twoStep = append(twoStep, d)
		}
	}
	e.held.forget(stale...)
	var rest []*Delivery
	var failedOp string
	var failed error
	fail := func(op string, err error, ds ...*Delivery) {
		rest = append(rest, ds...)
		if failed == nil {
			failedOp, failed = op, err
		}
	}

	// Records and two-step dead letters first: an entry is acknowledged
	// only once its record or its dead letter is written.
	if len(recorded) > 0 || len(twoStep) > 0 {
		sets := make([]*redis.StatusCmd, len(recorded))
		adds := make([]*redis.StringCmd, len(twoStep))
		_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, d := range recorded {
				sets[i] = p.Set(ctx, d.record, d.ID, time.Duration(d.recordMS)*time.Millisecond)
			}
			for i, d := range twoStep {
				if !d.dl.added {
					adds[i] = p.XAdd(ctx, e.xaddOf(d))
				}
			}
			return nil
		})
		bad := map[*Delivery]bool{}
		for i, d := range recorded {
			if err := sets[i].Err(); err != nil {
				fail("dedup-set", err, d)
				bad[d] = true
			} else {
				d.record = ""
			}
		}
		if len(bad) > 0 {
			kept := plain[:0]
			for _, d := range plain {
				if !bad[d] {
					kept = append(kept, d)
				}
			}
			plain = kept
		}
		added := twoStep[:0:0]
		for i, d := range twoStep {
			if cmd := adds[i]; cmd != nil && cmd.Err() != nil {
				fail("dead-letter xadd", cmd.Err(), d)
				continue
			}
			d.dl.added = true
			added = append(added, d)
		}
		twoStep = added
	}

	acks := append(plain, twoStep...)
	if len(acks) == 0 && len(scripted) == 0 {
		return rest, failedOp, failed
	}
	ids := make([]string, len(acks))
	for i, d := range acks {
		ids[i] = d.ID
	}
	var ack *redis.IntCmd
	var moves []*redis.Cmd
	_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ids) > 0 {
			ack = p.XAck(ctx, e.p.Stream, e.p.Group, ids...)
		}
		moves = e.queueScripts(ctx, p, scripted)
		return nil
	})
	if ack != nil && ack.Err() != nil {
		fail("xack", ack.Err(), acks...)
	} else if len(acks) > 0 {
		e.rep.ok()
		e.held.done(acks...)
		for _, d := range acks {
			if d.dl != nil {
				e.deadLettered(d)
			}
		}
	}
	// Entries the stream no longer holds are moved with the fields this
	// engine read: a second round, only for those.
	var gone []*Delivery
	for i, d := range scripted {
		switch err := e.settleScript(ctx, d, moves[i]); {
		case errors.Is(err, errEntryGone):
			d.give()
			gone = append(gone, d)
		case err != nil:
			fail("dead-letter", err, d)
		}
	}
	if len(gone) > 0 {
		_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			moves = e.queueScripts(ctx, p, gone)
			return nil
		})
		for i, d := range gone {
			if err := e.settleScript(ctx, d, moves[i]); err != nil {
				fail("dead-letter", err, d)
			}
		}
	}
	return rest, failedOp, failed
}
