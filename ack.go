package completion

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// acker batches acknowledgements and dead-letterings: one pipeline with one
// XACK for up to BatchSize ids and the dead-letter moves, at most AckDelay
// after the first of them was queued. A failed batch is retried with
// backoff (every step is idempotent); the entries stay pending meanwhile, so
// at worst they are delivered again. When ackerDone is closed it sends what
// it holds, with a bounded wait, and returns.
func (r *run) acker() {
	batch := make([]*delivery, 0, r.cfg.BatchSize)
	ids := make([]string, 0, r.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	bo := backoff{base: r.cfg.ErrorBackoff, max: r.cfg.MaxErrorBackoff}

	flush := func(final bool) {
		for len(batch) > 0 {
			ctx := r.ioCtx
			var cancel context.CancelFunc = func() {}
			if final {
				ctx, cancel = context.WithTimeout(r.ioCtx, finalAckTimeout)
			}
			op, err := r.sendBatch(ctx, batch, &ids)
			cancel()
			if err == nil {
				bo.reset()
				r.done(batch...)
				batch = batch[:0]
				return
			}
			r.redisError(op, err)
			if final {
				// Give up: these entries stay pending and are delivered
				// again later.
				r.forget(batch...)
				batch = batch[:0]
				return
			}
			if !sleep(r.ackerDone, bo.next()) {
				final = true
			}
		}
	}

	for {
		select {
		case d := <-r.acks:
			if len(batch) == 0 {
				timer.Reset(r.cfg.AckDelay)
			}
			batch = append(batch, d)
			if len(batch) >= r.cfg.BatchSize {
				timer.Stop()
				flush(false)
			}
		case <-timer.C:
			flush(false)
		case <-r.ackerDone:
			timer.Stop()
			// Take what workers queued before they finished.
		drain:
			for {
				select {
				case d := <-r.acks:
					batch = append(batch, d)
				default:
					break drain
				}
			}
			flush(true)
			return
		}
	}
}

// finalAckTimeout bounds the last XACK at shutdown.
const finalAckTimeout = 5 * time.Second

// sendBatch acknowledges and dead-letters the deliveries of the current
// epoch in batch (an entry read before its stream was deleted is gone, and
// its id may now name a new entry): first the dead-letter XADDs of two-step
// moves, then one pipeline with the XACK and the move scripts. ids is
// scratch space. It returns an error, and the step that failed, when the
// batch should be retried.
func (r *run) sendBatch(ctx context.Context, batch []*delivery, ids *[]string) (string, error) {
	r.mu.Lock()
	epoch := r.epoch
	r.mu.Unlock()
	oneScript := r.atomicDeadLetter()
	var twoStep, scripted []*delivery
	*ids = (*ids)[:0]
	for _, d := range batch {
		switch {
		case d.epoch != epoch:
		case d.dl == nil:
			*ids = append(*ids, d.id)
		case oneScript:
			scripted = append(scripted, d)
		default:
			twoStep = append(twoStep, d)
		}
	}
	if len(twoStep) > 0 {
		cmds := make([]*redis.StringCmd, len(twoStep))
		_, err := r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, d := range twoStep {
				if !d.dl.added {
					cmds[i] = p.XAdd(ctx, r.deadLetterXAdd(d))
				}
			}
			return nil
		})
		for i, cmd := range cmds {
			if cmd != nil && cmd.Err() == nil {
				twoStep[i].dl.added = true
			}
		}
		if err != nil {
			return "dead-letter xadd", err
		}
		for _, d := range twoStep {
			*ids = append(*ids, d.id)
		}
	}
	if len(*ids) == 0 && len(scripted) == 0 {
		return "", nil
	}
	keys := []string{r.cfg.Stream, r.cfg.DeadLetterStream}
	scripts := make([]*redis.Cmd, len(scripted))
	_, err := r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(*ids) > 0 {
			p.XAck(ctx, r.cfg.Stream, r.cfg.Group, *ids...)
		}
		for i, d := range scripted {
			scripts[i] = deadLetterScript.EvalSha(ctx, p, keys, r.deadLetterArgs(d)...)
		}
		return nil
	})
	if err != nil {
		// The script may not be loaded yet (or any more, after a restart):
		// run those one by one, which loads it.
		for i, cmd := range scripts {
			if e := cmd.Err(); e != nil && redis.HasErrorPrefix(e, "NOSCRIPT") {
				scripts[i] = deadLetterScript.Run(ctx, r.c.client, keys, r.deadLetterArgs(scripted[i])...)
			}
		}
		for _, cmd := range scripts {
			if e := cmd.Err(); e != nil && !errors.Is(e, redis.Nil) {
				return "dead-letter", e
			}
		}
		if len(*ids) > 0 {
			// The XACK may have failed as well: XACK is idempotent.
			if err := r.c.client.XAck(ctx, r.cfg.Stream, r.cfg.Group, *ids...).Err(); err != nil {
				return "xack", err
			}
		}
	}
	for _, d := range twoStep {
		r.deadLettered(d)
	}
	for i, d := range scripted {
		if n, _ := scripts[i].Int64(); n == 1 {
			r.deadLettered(d)
		} else {
			r.log.Info("entry was no longer pending when it was to be dead-lettered (handled or trimmed meanwhile); nothing moved", slog.String("id", d.id))
		}
	}
	return "", nil
}
