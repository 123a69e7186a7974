package taskstream

import (
	"context"
	"slices"
	"sync"
)

// Subscription is one subscriber's view of a task's stream: the events
// after the id it subscribed from, replayed from Redis and then live, in
// order, each once, until the finish event. Create one with
// [Hub.Subscribe]; take its events with [Subscription.Next].
//
// Next and Close may be called from different goroutines; Next itself from
// one goroutine at a time.
type Subscription struct {
	hub    *Hub
	taskID string

	// ready has a value when Next may find something new: an event, or the
	// end. Capacity 1.
	ready chan struct{}

	mu sync.Mutex
	// stopCtx stops the context.AfterFunc of Subscribe's ctx.
	stopCtx func() bool
	buf     []Event // events queued by the hub, not yet taken
	bytes   int     // the size of buf's events' data
	// last is the id of the last event queued (or skipped as a duplicate):
	// the hub reads after it.
	last streamID
	// taken is the id of the last event Next returned.
	taken streamID
	// end is set once no event will be queued any more; Next returns it
	// once buf is empty (io.EOF after the finish event).
	end error
	// fresh: the hub has not read for this subscription yet; its first read
	// also looks at the entries up to last (to find a finish already there,
	// and the operations whose outcome came before).
	fresh bool
	// catchingUp: the subscription is reading history (after Subscribe, or
	// after the hub lost its connection): the hub reads only as much as
	// fits in the buffer, and reads on when Next has made room. Otherwise a
	// full buffer when live events arrive cuts the subscription off.
	catchingUp bool
	// stalled: a catching-up subscription whose buffer was full; Next asks
	// the hub to read on once it has taken half of it.
	stalled bool
	// ops are the operations whose outcome was queued: a second outcome of
	// one operation (a duplicate write after a crash) is skipped.
	ops []string
}

func newSubscription(h *Hub, taskID string, last streamID) *Subscription {
	return &Subscription{
		hub:        h,
		taskID:     taskID,
		ready:      make(chan struct{}, 1),
		last:       last,
		taken:      last,
		fresh:      true,
		catchingUp: true,
	}
}

// TaskID returns the id of the task subscribed to.
func (s *Subscription) TaskID() string { return s.taskID }

// LastID returns the id of the last event Next returned, or the id
// subscribed from before that: the id to subscribe from again to resume.
func (s *Subscription) LastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.taken.String()
}

// Next returns the next event, waiting for it if there is none yet. After
// the finish event it returns io.EOF. It returns ctx's error when ctx ends
// first (the subscription stays open), and, once the buffered events are
// taken, the error that ended the subscription: the Subscribe context's
// error, [ErrSlowSubscriber], [ErrHubStopped], [ErrClosed] after Close, or
// a Redis refusal (such as WRONGTYPE) for the task's stream.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		ev, err, ok := s.poll()
		if ok {
			return ev, err
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// poll returns the next event or the end, with ok true, or ok false when
// there is neither yet.
func (s *Subscription) poll() (ev Event, err error, ok bool) {
	s.mu.Lock()
	if len(s.buf) == 0 {
		err := s.end
		s.mu.Unlock()
		return Event{}, err, err != nil
	}
	ev = s.buf[0]
	s.buf[0] = Event{}
	s.buf = s.buf[1:]
	s.bytes -= len(ev.Data)
	if len(s.buf) == 0 {
		s.buf = nil // an idle subscription holds no buffer
	}
	s.taken = ev.id
	more := s.stalled && len(s.buf) <= s.hub.cfg.Buffer/2 && s.bytes <= s.hub.cfg.BufferBytes/2 && s.end == nil
	if more {
		s.stalled = false
	}
	s.mu.Unlock()
	if more {
		s.hub.wantMore(s)
	}
	return ev, nil, true
}

// Close ends the subscription: the hub stops reading for it and drops what
// it buffered; Next returns [ErrClosed]. Close is idempotent.
func (s *Subscription) Close() {
	s.finish(ErrClosed, true)
}

// finish takes the subscription out of the hub and ends it with err
// unless it has ended already (or, with drop, with err whatever it was,
// dropping the buffer).
func (s *Subscription) finish(err error, drop bool) {
	s.stop()
	s.hub.remove(s)
	s.mu.Lock()
	if drop {
		clear(s.buf)
		s.buf, s.bytes = nil, 0
		s.end = err
	} else {
		s.endLocked(err)
	}
	s.mu.Unlock()
	s.signal()
}

// endLocked ends the subscription with err unless it has ended already.
// s.mu must be held.
func (s *Subscription) endLocked(err error) {
	if s.end == nil {
		s.end = err
	}
}

// stop stops the watch on Subscribe's ctx.
func (s *Subscription) stop() {
	s.mu.Lock()
	f := s.stopCtx
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// full reports whether the buffer has no room for an event of n bytes.
// s.mu must be held.
func (s *Subscription) full(n int) bool {
	return len(s.buf) >= s.hub.cfg.Buffer || len(s.buf) > 0 && s.bytes+n > s.hub.cfg.BufferBytes
}

// seen reports whether the outcome of operation op was queued already, and
// records it. s.mu must be held.
func (s *Subscription) seen(op string) bool {
	if slices.Contains(s.ops, op) {
		return true
	}
	s.ops = append(s.ops, op)
	return false
}
