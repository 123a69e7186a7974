package completion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/streamrelay/completion/internal/engine"
)

// processor decides what becomes of each delivery: the consumer's part of
// an entry's life between the read and the acknowledgement, in order:
//
//  1. an entry that cannot be decoded, or was delivered too often, is
//     dead-lettered;
//  2. with DedupTTL, an operation handled before is acknowledged;
//  3. the task is looked up (prefetched for the whole read batch when the
//     registry can), and an unknown one goes by Config.NotFound;
//  4. a task that does not match the entry, or lacks required fields, is
//     dead-lettered;
//  5. the handler runs; nil acknowledges (with a duplicate-suppression
//     record), a Permanent error dead-letters, another error retries.
//
// The engine carries the outcome out (internal/engine, workers.go).
type processor struct {
	c        *Consumer
	registry TaskRegistry
	handler  CompletionHandler
}

// item is what Prefetch found for a delivery (the task in comp.Task, or
// err), and the Completion handed to the handler: allocated per batch, not
// per entry.
type item struct {
	prefetched bool
	err        error
	comp       Completion
}

// Prefetch looks up the tasks of a batch in one call when the registry
// offers batch lookups (BatchTaskRegistry, e.g. redisregistry: one round
// trip for the batch instead of one per entry).
func (p *processor) Prefetch(ctx context.Context, ds []*engine.Delivery) {
	items := make([]item, len(ds))
	for i, d := range ds {
		d.Pre = &items[i]
	}
	batch, ok := p.registry.(BatchTaskRegistry)
	if !ok || len(ds) < 2 {
		return
	}
	keys := make([]TaskKey, 0, len(ds))
	idx := make([]int, 0, len(ds))
	for i, d := range ds {
		if d.Bad == nil {
			keys = append(keys, TaskKey{OperationID: d.Msg.OperationID, TaskID: d.Msg.TaskID})
			idx = append(idx, i)
		}
	}
	if len(keys) == 0 {
		return
	}
	var tasks []Task
	var errs []error
	func() {
		defer func() {
			if r := recover(); r != nil {
				p.c.log.Error("batch task lookup panicked; looking tasks up one by one", slog.String("panic", logText(fmt.Sprint(r))))
				tasks, errs = nil, nil
			}
		}()
		tasks, errs = batch.LookupTasks(ctx, keys)
	}()
	if len(tasks) != len(keys) || len(errs) != len(keys) {
		return // a broken implementation: look up one by one instead
	}
	for j, i := range idx {
		items[i].prefetched, items[i].comp.Task, items[i].err = true, tasks[j], errs[j]
	}
}

// Process takes one delivery to its outcome.
func (p *processor) Process(ctx context.Context, d *engine.Delivery) engine.Outcome {
	cfg := &p.c.cfg
	it, _ := d.Pre.(*item)
	if it == nil {
		it = &item{}
		d.Pre = it
	}
	if d.Bad != nil {
		return deadLetter(d.Reason, d.Bad)
	}
	if d.Count > int64(cfg.MaxDeliveries) {
		// Delivered too often without an outcome: probably a handler that
		// crashes its process. Do not call it again.
		return deadLetter(ReasonMaxDeliveries, fmt.Errorf("delivered %d times (MaxDeliveries is %d) without an outcome", d.Count, cfg.MaxDeliveries))
	}
	if cfg.DedupTTL > 0 {
		n, err := p.c.client.Exists(ctx, cfg.DedupPrefix+d.Msg.OperationID).Result()
		switch {
		case err != nil:
			out := p.retry(d, fmt.Errorf("duplicate check: %w", err))
			out.RedisErr, out.RedisOp = err, "dedup-exists"
			return out
		case n > 0:
			p.c.stats.Duplicates.Add(1)
			p.c.observe(engine.EventOf(engine.EventDuplicate, d))
			p.log(d).Info("completion was handled before (duplicate suppression); acknowledging without calling the handler")
			return engine.Outcome{Kind: engine.Ack}
		}
	}
	task, err := it.comp.Task, it.err
	if !it.prefetched {
		task, err = p.lookup(ctx, d)
	}
	it.prefetched, it.err = false, nil // a redelivery looks it up afresh
	if err != nil {
		return p.notFound(ctx, d, err)
	}
	if d.Msg.TaskID != "" && task.TaskID != "" && task.TaskID != d.Msg.TaskID && !cfg.TrustOperationID {
		return deadLetter(ReasonTaskMismatch, fmt.Errorf("the entry names task %q, but its operation %q belongs to task %q (set Config.TrustOperationID to hand such entries over)",
			logText(d.Msg.TaskID), logText(d.Msg.OperationID), logText(task.TaskID)))
	}
	if err := task.Require(cfg.RequiredTaskFields...); err != nil {
		return deadLetter(ReasonInvalidTask, err)
	}
	return p.handle(ctx, d, it, task)
}

// notFound is the outcome of a failed lookup.
func (p *processor) notFound(ctx context.Context, d *engine.Delivery, err error) engine.Outcome {
	if !errors.Is(err, ErrTaskNotFound) {
		p.c.stats.Failed.Add(1)
		ev := engine.EventOf(engine.EventFailed, d)
		ev.Err = err
		p.c.observe(ev)
		if ctx.Err() != nil {
			return engine.Outcome{Kind: engine.Leave}
		}
		return p.retry(d, fmt.Errorf("task registry: %w", err))
	}
	switch p.c.cfg.NotFound {
	case NotFoundDrop:
		p.c.stats.Dropped.Add(1)
		p.c.observe(engine.EventOf(engine.EventDropped, d))
		p.log(d).Warn("task not found; dropping the completion (NotFoundDrop)")
		return engine.Outcome{Kind: engine.Ack}
	case NotFoundRetry:
		return p.retry(d, err)
	}
	return deadLetter(ReasonTaskNotFound, err)
}

// handle runs the handler and maps its result to an outcome.
func (p *processor) handle(ctx context.Context, d *engine.Delivery, it *item, task Task) engine.Outcome {
	cfg := &p.c.cfg
	it.comp = Completion{Task: task, Message: Message(d.Msg), EntryID: d.ID, Deliveries: d.Count,
		Stream: d.Source.Stream, Group: d.Source.Group, values: d.Fields}
	var start time.Time
	if cfg.Observer != nil {
		start = time.Now()
	}
	err := p.call(ctx, &it.comp, d)
	if cfg.Observer != nil {
		kind := engine.EventHandled
		if err != nil {
			kind = engine.EventFailed
		}
		ev := engine.EventOf(kind, d)
		ev.Duration, ev.Err = time.Since(start), err
		p.c.observe(ev)
	}
	switch {
	case err == nil:
		p.c.stats.Handled.Add(1)
		out := engine.Outcome{Kind: engine.Ack}
		if cfg.DedupTTL > 0 {
			out.Record, out.RecordTTL = cfg.DedupPrefix+d.Msg.OperationID, cfg.DedupTTL
		}
		return out
	case ctx.Err() != nil:
		// Cut off at shutdown or because the partition changes owner: not
		// a failure of the entry.
		p.c.stats.Failed.Add(1)
		p.log(d).Info("handler stopped before finishing (shutdown, or the partition changes owner); the entry stays pending for a later delivery",
			slog.String("err", logText(err.Error())))
		return engine.Outcome{Kind: engine.Leave}
	case IsPermanent(err):
		p.c.stats.Failed.Add(1)
		return deadLetter(ReasonPermanent, err)
	}
	p.c.stats.Failed.Add(1)
	return p.retry(d, err)
}

// retry is the outcome of a failed delivery: another one after a growing
// delay, or the dead-letter stream once it was delivered MaxDeliveries
// times.
func (p *processor) retry(d *engine.Delivery, cause error) engine.Outcome {
	cfg := &p.c.cfg
	if d.Count >= int64(cfg.MaxDeliveries) {
		return deadLetter(ReasonMaxDeliveries, cause)
	}
	delay := engine.RetryDelay(cfg.RetryBackoff, cfg.MaxRetryBackoff, int(d.Count-1))
	p.log(d).Warn("delivery failed; will retry", slog.Duration("retry_in", delay), slog.String("err", logText(cause.Error())))
	return engine.Outcome{Kind: engine.Retry, Delay: delay, Err: cause}
}

func deadLetter(reason string, cause error) engine.Outcome {
	return engine.Outcome{Kind: engine.DeadLetter, Reason: reason, Err: cause}
}

// log returns the logger with d's attributes.
func (p *processor) log(d *engine.Delivery) *slog.Logger {
	return p.c.log.With(slog.String("id", d.ID), slog.String("operation_id", d.Msg.OperationID),
		slog.String("task_id", d.Msg.TaskID), slog.Int64("deliveries", d.Count))
}

// lookup asks the registry for d's task, turning a panic into an error.
func (p *processor) lookup(ctx context.Context, d *engine.Delivery) (t Task, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.c.log.Error("task registry panicked; counting it as a failed delivery",
				slog.String("id", d.ID), slog.String("panic", logText(fmt.Sprint(r))), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("%w: task registry: %v", ErrPanic, r)
		}
	}()
	return p.registry.LookupTask(ctx, d.Msg.OperationID, d.Msg.TaskID)
}

// call runs the handler, turning a panic into an error.
func (p *processor) call(ctx context.Context, c *Completion, d *engine.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log(d).Error("handler panicked; counting it as a failed delivery",
				slog.String("panic", logText(fmt.Sprint(r))), slog.String("stack", string(debug.Stack())))
			if pe, ok := r.(error); ok {
				err = fmt.Errorf("%w: handler: %w", ErrPanic, pe)
			} else {
				err = fmt.Errorf("%w: handler: %v", ErrPanic, r)
			}
		}
	}()
	return p.handler.HandleCompletion(ctx, c)
}
