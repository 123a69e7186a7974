package completion

import (
	"context"
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
			rest, op, err := r.sendBatch(ctx, batch, &ids)
			cancel()
			batch = append(batch[:0], rest...)
			if err == nil {
				bo.reset()
				return
			}
			r.redisError(op, err)
			if final || isFatal(err) {
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
// moves, then one pipeline with the XACK and the move scripts. Settled
// deliveries are done; it returns the rest, with the step that failed and
// its error, to be retried. ids is scratch space.
func (r *run) sendBatch(ctx context.Context, batch []*delivery, ids *[]string) ([]*delivery, string, error) {
	r.mu.Lock()
	epoch := r.epoch
	r.mu.Unlock()
	oneScript := r.atomicDeadLetter()
	var plain, twoStep, scripted, stale []*delivery
	for _, d := range batch {
		switch {
		case d.epoch != epoch:
			stale = append(stale, d)
		case d.dl == nil:
			plain = append(plain, d)
		case oneScript:
			scripted = append(scripted, d)
		default:
			twoStep = append(twoStep, d)
		}
	}
	r.forget(stale...)
	var rest []*delivery
	var failedOp string
	var failed error
	fail := func(op string, err error, ds ...*delivery) {
		rest = append(rest, ds...)
		if failed == nil {
			failedOp, failed = op, err
		}
	}

	// Two-step moves: the dead letter first; acknowledged below.
	if len(twoStep) > 0 {
		cmds := make([]*redis.StringCmd, len(twoStep))
		_, _ = r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, d := range twoStep {
				if !d.dl.added {
					cmds[i] = p.XAdd(ctx, r.deadLetterXAdd(d))
				}
			}
			return nil
		})
		added := twoStep[:0:0]
		for i, d := range twoStep {
			if cmd := cmds[i]; cmd != nil && cmd.Err() != nil {
				fail("dead-letter xadd", cmd.Err(), d)
				continue
			}
			d.dl.added = true
			added = append(added, d)
		}
		twoStep = added
	}

	acks := append(plain, twoStep...)
	*ids = (*ids)[:0]
	for _, d := range acks {
		*ids = append(*ids, d.id)
	}
	if len(acks) == 0 && len(scripted) == 0 {
		return rest, failedOp, failed
	}
	keys := []string{r.cfg.Stream, r.cfg.DeadLetterStream}
	var ack *redis.IntCmd
	scripts := make([]*redis.Cmd, len(scripted))
	_, _ = r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(*ids) > 0 {
			ack = p.XAck(ctx, r.cfg.Stream, r.cfg.Group, *ids...)
		}
		for i, d := range scripted {
			scripts[i] = deadLetterScript.EvalSha(ctx, p, keys, r.deadLetterArgs(d)...)
		}
		return nil
	})
	if ack != nil && ack.Err() != nil {
		fail("xack", ack.Err(), acks...)
	} else {
		r.done(acks...)
		for _, d := range acks {
			if d.dl != nil {
				r.deadLettered(d)
			}
		}
	}
	for i, d := range scripted {
		cmd := scripts[i]
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// Not loaded yet, or any more after a restart: Run loads it.
			cmd = deadLetterScript.Run(ctx, r.c.client, keys, r.deadLetterArgs(d)...)
		}
		n, err := cmd.Int64()
		switch {
		case err != nil:
			fail("dead-letter", err, d)
			continue
		case n == 1:
			r.deadLettered(d)
		default:
			r.log.Info("entry was no longer pending when it was to be dead-lettered (handled or trimmed meanwhile); nothing moved", slog.String("id", d.id))
		}
		r.done(d)
	}
	return rest, failedOp, failed
}
