package completion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/scripts"
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
	var ack *redis.IntCmd
	if len(*ids) > 0 || len(scripted) > 0 {
		var scripts []*redis.Cmd
		_, _ = r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			if len(*ids) > 0 {
				ack = p.XAck(ctx, r.cfg.Stream, r.cfg.Group, *ids...)
			}
			scripts = r.queueDeadLetterScripts(ctx, p, scripted)
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
		// Entries the stream no longer holds are moved with the fields
		// this consumer read: a second round, only for those.
		var gone []*delivery
		for i, d := range scripted {
			switch err := r.settleDeadLetter(ctx, d, scripts[i]); {
			case errors.Is(err, errEntryGone):
				r.giveFields(d)
				gone = append(gone, d)
			case err != nil:
				fail("dead-letter", err, d)
			}
		}
		if len(gone) > 0 {
			_, _ = r.c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				scripts = r.queueDeadLetterScripts(ctx, p, gone)
				return nil
			})
			for i, d := range gone {
				if err := r.settleDeadLetter(ctx, d, scripts[i]); err != nil {
					fail("dead-letter", err, d)
				}
			}
		}
	}
	return rest, failedOp, failed
}

// errEntryGone: the dead-letter script found the entry deleted from the
// stream; the move must carry the fields itself.
var errEntryGone = errors.New("the entry is no longer in the stream")

// queueDeadLetterScripts queues the dead-letter script of each delivery in
// ds on p.
func (r *run) queueDeadLetterScripts(ctx context.Context, p redis.Pipeliner, ds []*delivery) []*redis.Cmd {
	keys := []string{r.cfg.Stream, r.cfg.DeadLetterStream}
	cmds := make([]*redis.Cmd, len(ds))
	for i, d := range ds {
		cmds[i] = scripts.DeadLetter.EvalSha(ctx, p, keys, r.deadLetterArgs(d)...)
	}
	return cmds
}

// settleDeadLetter reads the reply of d's dead-letter script, running it
// again when the server had not loaded it. It records the move and forgets
// d, or returns errEntryGone, or the error that leaves d pending.
func (r *run) settleDeadLetter(ctx context.Context, d *delivery, cmd *redis.Cmd) error {
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// Not loaded yet, or any more after a restart: Run loads it.
		cmd = scripts.DeadLetter.Run(ctx, r.c.client, []string{r.cfg.Stream, r.cfg.DeadLetterStream}, r.deadLetterArgs(d)...)
	}
	n, err := cmd.Int64()
	switch {
	case err != nil:
		return err
	case n == scripts.DeadLetterGone:
		return errEntryGone
	case n == scripts.DeadLetterOversize:
		d.dl.reason = ReasonOversize
		d.dl.cause = fmt.Errorf("%w: the entry has more than %d fields or %d bytes (MaxPayloadBytes): moved without its fields",
			ErrMalformed, MaxEntryFields, r.cfg.MaxPayloadBytes)
		r.deadLettered(d)
	case n == scripts.DeadLetterMoved:
		r.deadLettered(d)
	default:
		r.log.Info("entry was no longer pending when it was to be dead-lettered (handled or trimmed meanwhile); nothing moved", slog.String("id", d.id))
	}
	r.done(d)
	return nil
}
