package taskstream

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// seedCount is how many entries at or before a new subscription's last id
// its first read looks at: a finish event among them ends the subscription
// at once, and the operations whose outcome is among them are not delivered
// again.
const seedCount = 16

// readTimeout bounds one pipeline of reads.
const readTimeout = 10 * time.Second

// read is one task's part of a pipeline.
type read struct {
	t     *task
	subs  []*Subscription // those that want events
	from  streamID        // the smallest last id of subs
	count int64
	cmd   *redis.XMessageSliceCmd
	// seeds[i] reads the entries up to subs[i].last for a fresh
	// subscription (nil for others).
	seeds []*redis.XMessageSliceCmd
	fresh []bool // per sub: a fresh subscription from a non-zero id
	err   error  // a permanent refusal of the read
	retry bool   // the read failed and must be retried
}

// readLoop takes queued tasks in batches and reads each task's stream from
// its subscribers' last ids, in one pipeline per batch, until the hub
// stops. The reads that failed (a node down, a timeout) are retried after a
// backoff; the others are delivered at once.
func (h *Hub) readLoop(ctx context.Context) {
	backoff := time.Duration(0)
	var log rateLimited
	for {
		batch := h.takeBatch()
		if batch == nil {
			return
		}
		reads := h.plan(batch)
		var err error
		if len(reads) > 0 {
			err = h.pipeline(ctx, reads)
		}
		var again, failed []*task
		for _, r := range reads {
			switch {
			case r.retry:
				failed = append(failed, r.t)
			case h.deliver(r):
				again = append(again, r.t)
			}
		}
		if len(failed) == 0 {
			backoff = 0
			h.doneReading(batch, false, again...)
			continue
		}
		h.readErrors.Add(1)
		ok := batch[:0:0]
		for _, t := range batch {
			if !slices.Contains(failed, t) {
				ok = append(ok, t)
			}
		}
		h.doneReading(ok, false, again...)
		if ctx.Err() != nil {
			h.doneReading(failed, false)
			return
		}
		if log.allow() {
			h.log.Warn("taskstream: read task streams (retrying)", "tasks", len(failed), "err", err)
		}
		backoff = nextBackoff(backoff, h.cfg.ErrorBackoff, h.cfg.MaxErrorBackoff)
		alive := sleep(ctx, backoff)
		h.doneReading(failed, alive)
		if !alive {
			return
		}
	}
}

// takeBatch waits for queued tasks and takes up to ReadBatch of them,
// urgent ones first. It returns nil when the hub stops.
func (h *Hub) takeBatch() []*task {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		if h.stopping {
			return nil
		}
		var batch []*task
		batch = h.popLocked(&h.urgent, batch, func(t *task) *bool { return &t.inUrgent })
		batch = h.popLocked(&h.idle, batch, func(t *task) *bool { return &t.inIdle })
		if len(batch) > 0 {
			if len(h.urgent)+len(h.idle) > 0 {
				h.cond.Signal() // more for another reader
			}
			return batch
		}
		h.cond.Wait()
	}
}

// popLocked moves tasks from q to batch (up to ReadBatch), skipping stale
// entries: tasks no longer queued there, removed, or being read (those
// get another read after the current one).
func (h *Hub) popLocked(q *[]*task, batch []*task, flag func(*task) *bool) []*task {
	for len(*q) > 0 && len(batch) < h.cfg.ReadBatch {
		t := (*q)[0]
		(*q)[0] = nil
		*q = (*q)[1:]
		if !*flag(t) {
			continue
		}
		*flag(t) = false
		if h.tasks[t.id] != t {
			continue
		}
		if t.reading {
			t.again = true
			continue
		}
		t.reading = true
		t.inUrgent, t.inIdle = false, false // this read serves both
		batch = append(batch, t)
	}
	if len(*q) == 0 {
		*q = nil // let the backing array go
	}
	return batch
}

// doneReading marks the batch's tasks read; those in again (or all, with
// retry) are queued for another read, as are those asked for meanwhile.
func (h *Hub) doneReading(batch []*task, retry bool, again ...*task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range again {
		t.again = true
	}
	for _, t := range batch {
		t.reading = false
		if (t.again || retry) && h.tasks[t.id] == t {
			t.again = false
			h.markLocked(t, true)
		}
		t.again = false
	}
}

// plan works out what to read for each task of batch: from the smallest
// last id of the subscriptions that want events, as many entries as the
// emptiest of them can take (at most ReadCount).
func (h *Hub) plan(batch []*task) []*read {
	h.mu.Lock()
	snap := make([][]*Subscription, len(batch))
	for i, t := range batch {
		snap[i] = append([]*Subscription(nil), t.subs...)
	}
	h.mu.Unlock()
	reads := make([]*read, 0, len(batch))
	for i, t := range batch {
		r := &read{t: t}
		for _, s := range snap[i] {
			s.mu.Lock()
			room := h.cfg.Buffer - len(s.buf)
			if s.bytes >= h.cfg.BufferBytes {
				room = 0
			}
			switch {
			case s.end != nil || s.stalled:
			case room == 0 && s.catchingUp:
				// Reading history with a full buffer: wait until Next
				// has taken half of it.
				s.stalled = true
			default:
				// (A live subscription with a full buffer still gets a
				// read: it is cut off if anything new came.)
				if len(r.subs) == 0 || s.last.less(r.from) {
					r.from = s.last
				}
				r.count = max(r.count, int64(room))
				r.subs = append(r.subs, s)
				r.fresh = append(r.fresh, s.fresh && !s.last.isZero())
			}
			s.mu.Unlock()
		}
		if len(r.subs) == 0 {
			continue
		}
		r.count = min(max(r.count, 1), int64(h.cfg.ReadCount))
		reads = append(reads, r)
	}
	return reads
}

// pipeline runs the reads in one pipeline. A read that must be retried (a
// connection failure, a timeout, a transient refusal such as LOADING) gets
// retry set; a permanent refusal (such as WRONGTYPE) is left in its err,
// for deliver. It returns the first error.
func (h *Hub) pipeline(ctx context.Context, reads []*read) error {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	h.pipelines.Add(1)
	h.reads.Add(int64(len(reads)))
	err := h.pipelined(ctx, func(p redis.Pipeliner) error {
		for _, r := range reads {
			key := h.streams.Key(r.t.id)
			r.cmd = p.XRangeN(ctx, key, "("+r.from.String(), "+", r.count)
			for j, fresh := range r.fresh {
				if fresh {
					if r.seeds == nil {
						r.seeds = make([]*redis.XMessageSliceCmd, len(r.subs))
					}
					r.seeds[j] = p.XRevRangeN(ctx, key, r.subs[j].last.String(), "-", seedCount)
				}
			}
		}
		return nil
	})
	if err == nil {
		return nil
	}
	for _, r := range reads {
		for _, cmd := range append([]*redis.XMessageSliceCmd{r.cmd}, r.seeds...) {
			switch {
			case cmd == nil || cmd.Err() == nil:
			case permanent(cmd.Err()):
				r.err = fmt.Errorf("taskstream: read the stream of task %q: %w", r.t.id, cmd.Err())
			default:
				r.retry = true
			}
		}
		if r.cmd == nil {
			r.retry = true // the pipeline failed before queueing it
		}
	}
	return err
}

// pipelined runs fn's commands as one pipeline on one of the hub's
// connection slots, waiting for a free one (or ctx's end).
func (h *Hub) pipelined(ctx context.Context, fn func(redis.Pipeliner) error) error {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.slots }()
	_, err := h.streams.client.Pipelined(ctx, fn)
	return err
}

// permanent reports whether err is a refusal that retrying cannot fix.
func permanent(err error) bool {
	for _, p := range []string{"WRONGTYPE", "NOPERM", "ERR "} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// deliver queues the events a read returned in its subscriptions' buffers,
// ending those that reached the finish event or are too slow. It reports
// whether the task needs another read: the read returned as many entries
// as it asked for, so there may be more.
func (h *Hub) deliver(r *read) (more bool) {
	var events []Event
	if r.err == nil {
		events = eventsOf(r.cmd.Val())
	}
	full := int64(len(events)) == r.count
	for j, s := range r.subs {
		var seeds []Event
		if r.err == nil && r.seeds != nil && r.seeds[j] != nil {
			seeds = eventsOf(r.seeds[j].Val())
		}
		queued, cut, done, again := s.take(r.err, seeds, events, full)
		more = more || again
		if cut {
			h.cutOff.Add(1)
		}
		if done {
			// Out of the hub before Next can see the end.
			s.stop()
			h.remove(s)
		}
		if queued || done {
			s.signal()
		}
	}
	return more
}

// take hands s what a read brought: the read's error, which ends s; the
// seed events (the last ones at or before s's last id, read when s was
// new: a finish among them ends s, and the operations among them are not
// delivered again); and the events after s's last id. It reports whether
// it queued events, cut s off as too slow, ended s, and whether s needs
// another read (the read was full, so there may be more).
func (s *Subscription) take(err error, seeds, events []Event, full bool) (queued, cut, done, more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return false, false, false, false
	}
	if err != nil {
		s.endLocked(err)
	}
	for _, e := range seeds {
		switch {
		case e.IsFinish():
			s.endLocked(io.EOF) // finished at or before last
		case e.OperationID != "":
			s.seen(e.OperationID)
		}
	}
	s.fresh = false
	if s.end == nil {
		queued, cut = s.queueLocked(events)
		if s.end == nil && !s.stalled {
			if full {
				more = true
			} else {
				s.catchingUp = false // read to the end
			}
		}
	}
	return queued, cut, s.end != nil, more
}

// queueLocked appends the events after s's last id to its buffer, skipping
// entries without data and duplicate outcomes of an operation, until the
// finish event or the buffer's bound: a subscriber catching up stalls
// there (to be read again later), a live one is cut off. s.mu is held.
func (s *Subscription) queueLocked(events []Event) (queued, cut bool) {
	for _, e := range events {
		if !s.last.less(e.id) {
			continue
		}
		if len(e.Data) == 0 || e.OperationID != "" && !e.IsFinish() && s.seen(e.OperationID) {
			s.last = e.id // an entry without data, or a duplicate outcome
			continue
		}
		if s.full(len(e.Data)) {
			if s.catchingUp {
				s.stalled = true
			} else {
				s.endLocked(ErrSlowSubscriber)
				cut = true
			}
			return queued, cut
		}
		s.buf = append(s.buf, e)
		s.bytes += len(e.Data)
		s.last = e.id
		queued = true
		if e.IsFinish() {
			s.endLocked(io.EOF)
			return queued, cut
		}
	}
	return queued, cut
}
