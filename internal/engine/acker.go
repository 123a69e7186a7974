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
// entries stay pending meanwhile, so at worst they are delivered again. Its
// buffer holds at most BatchSize deliveries: workers wait beyond that. A
// batch being retried takes in what arrived meanwhile, so while Redis
// refuses acknowledgements it can grow, bounded by what the engine holds
// (the read-ahead budget: the reader reads nothing more while that much is
// held).
type acker struct {
	e *Engine

	mu      sync.Mutex
	buf     []*Delivery
	notFull *sync.Cond
	closed  bool // no more deliveries are taken: they stay pending
	// stopping: the engine stops; add no longer waits for room, so that
	// workers return even while a send hangs (Redis does not answer).
	stopping bool
	kick     chan struct{}

	finishing chan time.Time // the deadline of the final flush
	exited    chan struct{}
}

func newAcker(e *Engine) *acker {
	a := &acker{e: e, kick: make(chan struct{}, 1), finishing: make(chan time.Time, 1), exited: make(chan struct{})}
	a.notFull = sync.NewCond(&a.mu)
	return a
}

// add queues d's acknowledgement (or move). It waits while BatchSize
// deliveries wait already, unless the engine is stopping (then at most
// Concurrency more wait, for the final flush); once the acker has
// finished, d is forgotten: it stays pending.
func (a *acker) add(d *Delivery) {
	a.mu.Lock()
	if len(a.buf) >= a.e.p.BatchSize && !a.closed && !a.stopping {
		a.e.signal("acker-full") // a worker waits
	}
	for len(a.buf) >= a.e.p.BatchSize && !a.closed && !a.stopping {
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

// release makes add stop waiting for room: the engine is stopping, and a
// worker that finished must return even if the acker is stuck in a Redis
// call, or the stop would take it for a handler ignoring its context.
func (a *acker) release() {
	a.mu.Lock()
	a.stopping = true
	a.notFull.Broadcast()
	a.mu.Unlock()
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
			// Keep only what failed: the array must not hold settled
			// deliveries, or their entries stay in memory.
			clear(batch[len(rest):])
			batch = append(batch[:0], rest...)
			if err == nil {
				bo.reset()
				break
			}
			if e.rep.fail(op, err) {
				e.held.forget(batch...)
				clear(batch)
				batch = batch[:0]
				break
			}
			// Retry what failed; take in what arrived meanwhile.
			if !clock.Sleep(e.p.Clock, e.stop, bo.next()) {
				e.held.forget(batch...) // the final flush is for what waits in buf
				clear(batch)
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
	var f failures
	s := a.sort(a.checkLapsed(batch))
	// Records and two-step dead letters first: an entry is acknowledged
	// only once its record or its dead letter is written.
	if len(s.recorded) > 0 || len(s.twoStep) > 0 {
		a.writeFirst(ctx, &s, &f)
	}
	if len(s.acks) > 0 || len(s.scripted) > 0 {
		a.ackAndMove(ctx, &s, &f)
	}
	return f.rest, f.op, f.err
}

// settled drops settled deliveries from the held set and releases what
// they refer to.
func (e *Engine) settled(ds ...*Delivery) {
	e.held.done(ds...)
	for _, d := range ds {
		d.release()
	}
}

// checkLapsed runs the lease script over the deliveries of batch whose
// claim lapsed (this process was paused, or Redis did not answer, for most
// of ClaimMinIdle): another consumer may have taken them over, and even
// finished them, meanwhile. Those are counted as leases lost; their
// dead-letter moves are dropped (the new owner decides about them) and
// their XACKs still sent (the handler here finished). It returns the
// deliveries to settle.
func (a *acker) checkLapsed(batch []*Delivery) []*Delivery {
	e := a.e
	lapsed := e.held.lapsed(batch, e.now()-int64(e.p.ClaimMinIdle*3/4))
	if len(lapsed) == 0 {
		return batch
	}
	ids := make([]any, len(lapsed))
	for i, d := range lapsed {
		ids[i] = d.ID
	}
	newly, err := e.lease(ids, true)
	if err != nil || len(newly) == 0 {
		return batch // cannot tell: settle them (at least once)
	}
	drop := make(map[*Delivery]bool, len(newly))
	for _, d := range newly {
		if d.dl != nil {
			drop[d] = true
		}
	}
	if len(drop) == 0 {
		return batch
	}
	kept := make([]*Delivery, 0, len(batch))
	var dropped []*Delivery
	for _, d := range batch {
		if drop[d] {
			dropped = append(dropped, d)
		} else {
			kept = append(kept, d)
		}
	}
	e.held.forget(dropped...)
	return kept
}

// sorted is a batch by what its deliveries need.
type sorted struct {
	acks     []*Delivery // a plain XACK (plain ones first, then two-step moves once written)
	recorded []*Delivery // of acks: a record to write first
	twoStep  []*Delivery // a dead letter to write first, then the XACK
	scripted []*Delivery // a move script
}

// failures collects what failed, to be retried.
type failures struct {
	rest []*Delivery
	op   string
	err  error
}

func (f *failures) add(op string, err error, ds ...*Delivery) {
	f.rest = append(f.rest, ds...)
	if f.err == nil {
		f.op, f.err = op, err
	}
}

// sort splits batch, forgetting the deliveries of an older epoch.
func (a *acker) sort(batch []*Delivery) sorted {
	e := a.e
	epoch := e.held.currentEpoch()
	atomic := e.atomicMoves()
	var s sorted
	var stale []*Delivery
	for _, d := range batch {
		switch {
		case d.epoch != epoch:
			stale = append(stale, d)
		case d.dl == nil:
			s.acks = append(s.acks, d)
			if d.record != "" {
				s.recorded = append(s.recorded, d)
			}
		case atomic:
			s.scripted = append(s.scripted, d)
		default:
			s.twoStep = append(s.twoStep, d)
		}
	}
	e.held.forget(stale...)
	return s
}

// writeFirst writes the records and the two-step dead letters; what failed
// is taken out of s.acks, what was written joins them.
func (a *acker) writeFirst(ctx context.Context, s *sorted, f *failures) {
	e := a.e
	sets := make([]*redis.StatusCmd, len(s.recorded))
	adds := make([]*redis.StringCmd, len(s.twoStep))
	_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range s.recorded {
			sets[i] = p.Set(ctx, d.record, d.ID, time.Duration(d.recordMS)*time.Millisecond)
		}
		for i, d := range s.twoStep {
			if !d.dl.added {
				adds[i] = p.XAdd(ctx, e.xaddOf(d))
			}
		}
		return nil
	})
	bad := map[*Delivery]bool{}
	for i, d := range s.recorded {
		if err := sets[i].Err(); err != nil {
			f.add("dedup-set", err, d)
			bad[d] = true
		} else {
			d.record = ""
		}
	}
	kept := s.acks[:0]
	for _, d := range s.acks {
		if !bad[d] {
			kept = append(kept, d)
		}
	}
	s.acks = kept
	for i, d := range s.twoStep {
		if cmd := adds[i]; cmd != nil && cmd.Err() != nil {
			f.add("dead-letter xadd", cmd.Err(), d)
			continue
		}
		d.dl.added = true
		s.acks = append(s.acks, d)
	}
}

// ackAndMove sends one pipeline with the XACK of s.acks and the move
// scripts, then moves again, with their fields, the entries the stream no
// longer holds.
func (a *acker) ackAndMove(ctx context.Context, s *sorted, f *failures) {
	e := a.e
	ids := make([]string, len(s.acks))
	for i, d := range s.acks {
		ids[i] = d.ID
	}
	var ack *redis.IntCmd
	var moves []*redis.Cmd
	_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ids) > 0 {
			ack = p.XAck(ctx, e.p.Stream, e.p.Group, ids...)
		}
		moves = e.queueScripts(ctx, p, s.scripted)
		return nil
	})
	if ack != nil && ack.Err() != nil {
		f.add("xack", ack.Err(), s.acks...)
	} else if len(s.acks) > 0 {
		e.rep.ok()
		for _, d := range s.acks {
			if d.dl != nil {
				e.deadLettered(d)
			}
		}
		e.settled(s.acks...)
	}
	var gone []*Delivery
	for i, d := range s.scripted {
		switch err := e.settleScript(ctx, d, moves[i]); {
		case errors.Is(err, errEntryGone):
			d.give()
			gone = append(gone, d)
		case err != nil:
			f.add("dead-letter", err, d)
		}
	}
	if len(gone) == 0 {
		return
	}
	_, _ = e.p.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		moves = e.queueScripts(ctx, p, gone)
		return nil
	})
	for i, d := range gone {
		if err := e.settleScript(ctx, d, moves[i]); err != nil {
			f.add("dead-letter", err, d)
		}
	}
}
