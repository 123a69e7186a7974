package engine

import (
	"hash/maphash"
	"sync"
)

// queue holds the deliveries waiting for a worker, in stream order. The
// reader, the reclaimer and the retrier push, a batch at a time under one
// lock; workers pop one at a time. Under OrderByTask it has one shard per
// worker and a task's deliveries always go to the same shard, so that they
// are handled one at a time, in order.
type queue struct {
	mu     sync.Mutex
	shards []shard
	n      int        // deliveries in all shards
	space  *sync.Cond // signalled when n falls to below
	// below is what waitBelow waits for n to fall to; -1 while no one
	// waits. Pops signal only then: a pop per delivery waking the reader,
	// only for it to find the queue still too long, costs a goroutine
	// switch per entry.
	below   int
	waiting int // workers waiting in pop
	closed  bool
	seed    maphash.Seed
}

type shard struct {
	items []*Delivery
	head  int
	ready *sync.Cond // signalled when items arrive or the queue closes
}

// newQueue returns a queue with the given number of shards (1, or one per
// worker under OrderByTask).
func newQueue(shards int) *queue {
	q := &queue{shards: make([]shard, shards), seed: maphash.MakeSeed(), below: -1}
	q.space = sync.NewCond(&q.mu)
	for i := range q.shards {
		q.shards[i].ready = sync.NewCond(&q.mu)
	}
	return q
}

// shardOf returns the shard of d: its task's, or for an undecodable entry
// its id's.
func (q *queue) shardOf(d *Delivery) int {
	if len(q.shards) == 1 {
		return 0
	}
	key := d.Msg.TaskID
	if d.Bad != nil {
		key = d.ID
	}
	return int(maphash.String(q.seed, key) % uint64(len(q.shards)))
}

// push appends ds. It returns false, having taken none, when the queue is
// closed.
func (q *queue) push(ds []*Delivery) bool {
	if len(ds) == 0 {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	for _, d := range ds {
		s := &q.shards[q.shardOf(d)]
		s.items = append(s.items, d)
	}
	q.n += len(ds)
	if len(q.shards) == 1 {
		// Wake one idle worker; each worker that takes a delivery and
		// leaves more behind wakes the next (pop). Waking one per delivery
		// woke every idle worker at each read, and on two cores most of
		// them found the queue emptied by the others and went back to
		// sleep: a goroutine switch, often a thread wake-up, per entry.
		q.shards[0].ready.Signal()
		return true
	}
	for i := range q.shards {
		if len(q.shards[i].items) > q.shards[i].head {
			q.shards[i].ready.Broadcast() // one worker per shard
		}
	}
	return true
}

// pop returns the next delivery of shard i, waiting for one; false when the
// queue is closed.
func (q *queue) pop(i int) (*Delivery, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := &q.shards[i]
	for s.head == len(s.items) && !q.closed {
		q.waiting++
		s.ready.Wait()
		q.waiting--
	}
	if q.closed {
		return nil, false
	}
	d := s.items[s.head]
	s.items[s.head] = nil
	s.head++
	if s.head == len(s.items) {
		s.items, s.head = s.items[:0], 0
	} else {
		s.ready.Signal() // more wait: wake the next idle worker (see push)
	}
	q.n--
	if q.n <= q.below {
		q.space.Signal()
	}
	return d, true
}

// waitBelow waits until at most n deliveries are queued. It returns false
// when the queue is closed. One goroutine at a time may wait (the reader).
func (q *queue) waitBelow(n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > n && !q.closed {
		q.below = n
		q.space.Wait()
	}
	q.below = -1
	return !q.closed
}

// close wakes every waiter and returns what was still queued, which stays
// pending in Redis.
func (q *queue) close() []*Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	var left []*Delivery
	for i := range q.shards {
		s := &q.shards[i]
		left = append(left, s.items[s.head:]...)
		s.items, s.head = nil, 0
		s.ready.Broadcast()
	}
	q.n = 0
	q.space.Broadcast()
	return left
}
