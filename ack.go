package completion

import (
	"context"
	"time"
)

// acker batches acknowledgements: it sends one XACK for up to BatchSize ids,
// at most AckDelay after the first of them was queued. A failed XACK is
// retried with backoff; the entries stay pending meanwhile, so at worst
// they are delivered again. When ackerDone is closed it sends what it
// holds, with a bounded wait, and returns.
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
			ids = r.currentIDs(ids[:0], batch)
			var err error
			if len(ids) > 0 {
				err = r.c.client.XAck(ctx, r.cfg.Stream, r.cfg.Group, ids...).Err()
			}
			cancel()
			if err == nil {
				bo.reset()
				r.forget(batch...)
				batch = batch[:0]
				return
			}
			r.redisError("xack", err)
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

// currentIDs appends to ids the ids of the deliveries of the current epoch:
// an entry read before its stream was deleted is gone, and its id may now
// name a new entry.
func (r *run) currentIDs(ids []string, batch []*delivery) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range batch {
		if d.epoch == r.epoch {
			ids = append(ids, d.id)
		}
	}
	return ids
}
