package completion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// now is time.Now; a variable only so that the intent reads clearly at call
// sites that record when Redis reset an entry's idle time.
var now = time.Now

// worker handles entries from q until the run stops.
func (r *run) worker(q <-chan *delivery) {
	defer r.workers.Done()
	for {
		select {
		case <-r.stop:
			return
		case d := <-q:
			if r.stopped() || r.cutOff.Load() {
				// Not started: leave it pending for a later delivery.
				r.forget(d)
				continue
			}
			if r.sem == nil {
				r.process(d)
				continue
			}
			select {
			case r.sem <- struct{}{}:
			case <-r.stop:
				r.forget(d)
				continue
			}
			r.process(d)
			<-r.sem
		}
	}
}

// process takes one entry to its outcome: acknowledged, scheduled for a
// retry, or dead-lettered.
func (r *run) process(d *delivery) {
	if d.badMsg != nil {
		r.deadLetter(d, d.reason, d.badMsg)
		return
	}
	log := func() *slog.Logger {
		return r.log.With(slog.String("id", d.id), slog.String("operation_id", d.msg.OperationID),
			slog.String("task_id", d.msg.TaskID), slog.Int64("deliveries", d.count))
	}
	if d.count > int64(r.cfg.MaxDeliveries) {
		// Delivered too often without an outcome: probably a handler that
		// crashes its process. Do not call it again.
		r.deadLetter(d, ReasonMaxDeliveries, fmt.Errorf("delivered %d times (MaxDeliveries is %d) without an outcome", d.count, r.cfg.MaxDeliveries))
		return
	}
	ctx := r.handlerCtx

	if r.cfg.DedupTTL > 0 {
		n, err := r.c.client.Exists(ctx, r.cfg.DedupPrefix+d.msg.OperationID).Result()
		if err != nil {
			r.redisError("dedup-exists", err)
		} else if n > 0 {
			r.c.stats.duplicates.Add(1)
			r.observeDelivery(EventDuplicate, d)
			log().Info("completion was handled before (duplicate suppression); acknowledging without calling the handler")
			r.ack(d)
			return
		}
	}

	task, err := d.task, d.taskErr
	if !d.prefetched {
		task, err = r.lookup(ctx, d)
	}
	d.prefetched, d.taskErr = false, nil // a redelivery looks it up afresh
	if err != nil {
		if !errors.Is(err, ErrTaskNotFound) {
			r.c.stats.failed.Add(1)
			r.observe(Event{Kind: EventFailed, EntryID: d.id, OperationID: d.msg.OperationID, TaskID: d.msg.TaskID, Deliveries: d.count, Err: err})
			r.retryOrDeadLetter(d, fmt.Errorf("task registry: %w", err), log)
			return
		}
		switch r.cfg.NotFound {
		case NotFoundDrop:
			r.c.stats.dropped.Add(1)
			r.observeDelivery(EventDropped, d)
			log().Warn("task not found; dropping the completion (NotFoundDrop)")
			r.ack(d)
		case NotFoundRetry:
			r.retryOrDeadLetter(d, err, log)
		default:
			r.deadLetter(d, ReasonTaskNotFound, err)
		}
		return
	}
	if err := task.Require(r.cfg.RequiredTaskFields...); err != nil {
		r.deadLetter(d, ReasonInvalidTask, err)
		return
	}

	d.comp = Completion{Task: task, Message: d.msg, EntryID: d.id, Deliveries: d.count, Stream: r.cfg.Stream, Group: r.cfg.Group, values: d.values}
	start := now()
	err = r.call(ctx, &d.comp, log)
	if r.cfg.Observer != nil {
		kind := EventHandled
		if err != nil {
			kind = EventFailed
		}
		r.observe(Event{Kind: kind, EntryID: d.id, OperationID: d.msg.OperationID, TaskID: d.msg.TaskID,
			Deliveries: d.count, Duration: now().Sub(start), Err: err})
	}
	switch {
	case err != nil && r.cutOff.Load():
		// The partition changes owner: the next one delivers it again.
		r.c.stats.failed.Add(1)
		r.forget(d)
	case err == nil:
		r.c.stats.succeeded.Add(1)
		if r.cfg.DedupTTL > 0 {
			if err := r.c.client.Set(r.ioCtx, r.cfg.DedupPrefix+d.msg.OperationID, d.id, r.cfg.DedupTTL).Err(); err != nil {
				r.redisError("dedup-set", err)
			}
		}
		r.ack(d)
	case IsPermanent(err):
		r.c.stats.failed.Add(1)
		r.deadLetter(d, ReasonPermanent, err)
	default:
		r.c.stats.failed.Add(1)
		r.retryOrDeadLetter(d, err, log)
	}
}

// lookup asks the registry for d's task, turning a panic into an error.
func (r *run) lookup(ctx context.Context, d *delivery) (t Task, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("task registry panicked; counting it as a failed delivery",
				slog.String("id", d.id), slog.String("panic", logText(fmt.Sprint(p))), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("%w: task registry: %v", ErrPanic, p)
		}
	}()
	return r.c.registry.LookupTask(ctx, d.msg.OperationID, d.msg.TaskID)
}

// call runs the handler, turning a panic into an error.
func (r *run) call(ctx context.Context, c *Completion, log func() *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log().Error("handler panicked; counting it as a failed delivery",
				slog.String("panic", logText(fmt.Sprint(p))), slog.String("stack", string(debug.Stack())))
			if pe, ok := p.(error); ok {
				err = fmt.Errorf("%w: handler: %w", ErrPanic, pe)
			} else {
				err = fmt.Errorf("%w: handler: %v", ErrPanic, p)
			}
		}
	}()
	return r.c.handler.HandleCompletion(ctx, c)
}

// retryOrDeadLetter schedules another delivery of d after a growing delay,
// or dead-letters it when it has been delivered MaxDeliveries times.
func (r *run) retryOrDeadLetter(d *delivery, cause error, log func() *slog.Logger) {
	if d.count >= int64(r.cfg.MaxDeliveries) {
		r.deadLetter(d, ReasonMaxDeliveries, cause)
		return
	}
	delay := expDelay(r.cfg.RetryBackoff, r.cfg.MaxRetryBackoff, int(d.count-1))
	log().Warn("delivery failed; will retry", slog.Duration("retry_in", delay), slog.String("err", logText(cause.Error())))
	r.c.stats.retried.Add(1)
	r.observe(Event{Kind: EventRetryScheduled, EntryID: d.id, OperationID: d.msg.OperationID, TaskID: d.msg.TaskID,
		Deliveries: d.count, Delay: delay, Err: cause})
	r.scheduleRetry(d, delay)
}

// ack queues d's acknowledgement; the acker sends it in a batch and then
// forgets the entry.
func (r *run) ack(d *delivery) {
	select {
	case r.acks <- d:
	case <-r.ackerDone:
		// Shutdown gave up on this handler; the entry stays pending.
		r.forget(d)
	}
}
