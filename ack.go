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
	batch := make([]string, 0, r.cfg.BatchSize)
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
			err := r.c.client.XAck(ctx, r.cfg.Stream, r.cfg.Group, batch...).Err()
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
		case id := <-r.acks:
			if len(batch) == 0 {
				timer.Reset(r.cfg.AckDelay)
			}
			batch = append(batch, id)
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
				case id := <-r.acks:
					batch = append(batch, id)
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
