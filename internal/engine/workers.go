package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// worker takes deliveries from its shard of the queue, one at a time, has
// the Processor decide about each, and carries the Outcome out.
type worker struct {
	e     *Engine
	shard int

	// mu guards current and cancel: the leaser cancels the context of the
	// delivery this worker runs when another consumer took it over.
	mu      sync.Mutex
	current *Delivery
	ctx     context.Context
	cancel  context.CancelFunc
}

func (w *worker) run() {
	e := w.e
	for {
		d, ok := e.queue.pop(w.shard)
		if !ok {
			return
		}
		if e.cutOff.Load() || !w.stillOurs(d) {
			e.held.forget(d) // not started: left pending for a later delivery
			continue
		}
		if e.p.Sem != nil {
			select {
			case e.p.Sem <- struct{}{}:
			case <-e.stop:
				e.held.forget(d)
				continue
			}
		}
		w.process(d)
		if e.p.Sem != nil {
			<-e.p.Sem
		}
	}
}

// stillOurs checks, for a delivery whose claim may have lapsed while it
// waited (its idle time, last reset at d.touched, is near ClaimMinIdle: the
// process was paused, or the queue was long), that this consumer still owns
// it, renewing the claim if so. One another consumer took over, or took
// over and finished, is counted as a lease lost and not handled here.
func (w *worker) stillOurs(d *Delivery) bool {
	e := w.e
	touched, current, lost := e.held.leaseState(d)
	switch {
	case !current, lost:
		return false
	case time.Duration(e.now()-touched) < e.p.ClaimMinIdle*3/4:
		return true
	}
	if _, err := e.lease([]any{d.ID}, false); err != nil {
		e.rep.fail("lease", err)
		return true // cannot tell: handle it (at least once)
	}
	return !e.held.isLost(d)
}

// context returns the context for the next delivery: the engine's handler
// context, or a fresh child when the leaser cancelled the last one.
func (w *worker) context(d *Delivery) context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		w.ctx, w.cancel = context.WithCancel(w.e.handlerCtx)
	}
	w.current = d
	return w.ctx
}

// cancelIf cancels the context of d's handler if this worker runs d.
func (w *worker) cancelIf(d *Delivery) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current == d && w.cancel != nil {
		w.cancel()
	}
}

func (w *worker) done() {
	w.mu.Lock()
	w.current = nil
	w.mu.Unlock()
}

// process has the Processor decide about d and carries the outcome out.
func (w *worker) process(d *Delivery) {
	e := w.e
	ctx := w.context(d)
	out := e.p.Processor.Process(ctx, d)
	w.done()
	if out.RedisErr != nil {
		e.rep.fail(out.RedisOp, out.RedisErr)
	}
	if out.Kind != Ack && (e.cutOff.Load() || e.held.isLost(d)) {
		// The partition changes owner, or another consumer took the entry
		// over: the new owner delivers it again.
		out.Kind = Leave
	}
	switch out.Kind {
	case Ack:
		if out.Record != "" {
			d.record, d.recordMS = out.Record, max(out.RecordTTL.Milliseconds(), 1)
		}
		e.held.settle(d)
		e.acker.add(d)
	case Retry:
		e.retrier.schedule(d, out.Delay, out.Err)
	case DeadLetter:
		if !e.held.current(d) { // its stream was deleted meanwhile
			e.held.forget(d)
			return
		}
		d.dl = e.newMove(d, out.Reason, out.Err)
		e.held.settle(d)
		e.acker.add(d)
	case Leave:
		e.held.forget(d)
		d.release()
		if e.stopped() || e.cutOff.Load() {
			e.log.Debug("handler stopped before finishing; the entry stays pending for a later delivery", slog.String("id", d.ID))
		}
	}
}
