package engine

import (
	"container/heap"
	"sync"
	"sync/atomic"
)

// held is the set of entries an engine holds: read and not yet acknowledged
// (queued, being handled, waiting for a retry or for their XACK). It is the
// only state the engine's goroutines share; every method takes its lock.
type held struct {
	mu sync.Mutex
	// epoch is bumped when the stream or group is recreated: the entries
	// held are gone then, and their ids may name new entries.
	epoch uint64
	m     map[string]*Delivery
	// While a read of the own pending list or an XAUTOCLAIM is under way
	// (guards > 0), acknowledged ids are remembered: such a read can
	// return an entry whose XACK landed after the read was sent, and that
	// entry must not be handled again.
	guards  int
	acked   map[string]struct{}
	retries retryHeap
	bytes   int64 // the sizes of the entries in m
	// room is signalled when bytes fall: the reader may wait for it.
	room chan struct{}

	count atomic.Int64 // len(m), for Stats.InFlight without the lock

	// onLost is called, without the lock, with the ids of gone deliveries
	// (see Delivery.gone) let go unhandled: they are lost.
	onLost func(ids []string)
}

func newHeld(onLost func(ids []string)) *held {
	return &held{m: make(map[string]*Delivery), room: make(chan struct{}, 1), onLost: onLost}
}

// currentEpoch returns the epoch.
func (h *held) currentEpoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

// track registers the deliveries in ds as held and returns those it
// accepted: not those of an older epoch, nor those already held (a reclaim
// or re-read of an entry still being worked on), nor those acknowledged
// since a guarded read began. An entry waiting for its retry is delivered
// now instead when preempt is set (another consumer's XAUTOCLAIM would have
// taken it anyway).
func (h *held) track(ds []Delivery, preempt bool) []*Delivery {
	out := make([]*Delivery, 0, len(ds))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range ds {
		d := &ds[i]
		if d.epoch != h.epoch {
			d.release()
			continue
		}
		if _, ok := h.acked[d.ID]; ok {
			d.release()
			continue
		}
		if old, ok := h.m[d.ID]; ok {
			if old.retryIdx < 0 || !preempt {
				// The read reset the entry's idle time and counted a
				// delivery: keep a copy waiting for its retry in step, or
				// the retry's XCLAIM MIN-IDLE would take it for someone
				// else's. (A copy a worker has is not touched: the worker
				// reads it without the lock, and leases keep its idle time.)
				if old.retryIdx != notQueued {
					old.touched, old.Count = d.touched, max(old.Count, d.Count)
				}
				d.release()
				continue
			}
			// It was waiting for a retry: deliver it now instead.
			h.retries.remove(old)
			h.drop(old)
			old.release()
		}
		d.retryIdx = notQueued
		h.m[d.ID] = d
		h.bytes += int64(d.size)
		out = append(out, d)
	}
	h.count.Store(int64(len(h.m)))
	return out
}

// guard starts a read that may return entries acknowledged meanwhile (the
// own pending list, XAUTOCLAIM); unguard ends it.
func (h *held) guard() {
	h.mu.Lock()
	h.guards++
	if h.acked == nil {
		h.acked = make(map[string]struct{})
	}
	h.mu.Unlock()
}

func (h *held) unguard() {
	h.mu.Lock()
	if h.guards--; h.guards == 0 {
		clear(h.acked)
	}
	h.mu.Unlock()
}

// done drops acknowledged (or dead-lettered) deliveries, remembering their
// ids while a guarded read is under way.
func (h *held) done(ds ...*Delivery) {
	h.mu.Lock()
	if h.guards > 0 {
		for _, d := range ds {
			h.acked[d.ID] = struct{}{}
		}
	}
	for _, d := range ds {
		d.gone = false // settled: not lost
	}
	h.forgetLocked(ds)
	h.mu.Unlock()
}

// forget drops deliveries that stay pending in Redis; those gone from it
// are lost, and reported.
func (h *held) forget(ds ...*Delivery) {
	h.mu.Lock()
	lost := h.forgetLocked(ds)
	h.mu.Unlock()
	h.reportLost(lost)
}

// forgetLocked drops ds and returns the ids of the gone ones among them.
func (h *held) forgetLocked(ds []*Delivery) []string {
	var lost []string
	for _, d := range ds {
		if h.m[d.ID] == d {
			if d.retryIdx >= 0 {
				h.retries.remove(d)
			}
			h.drop(d)
			if d.gone {
				lost = append(lost, d.ID)
			}
		}
	}
	h.count.Store(int64(len(h.m)))
	return lost
}

func (h *held) reportLost(ids []string) {
	if len(ids) > 0 && h.onLost != nil {
		h.onLost(ids)
	}
}

// drop deletes d from m and its bytes from the budget; h.mu is held.
func (h *held) drop(d *Delivery) {
	delete(h.m, d.ID)
	h.bytes -= int64(d.size)
	select {
	case h.room <- struct{}{}:
	default:
	}
}

// newEpoch forgets everything held: the stream or group was deleted and
// recreated. Acks and dead letters of older deliveries are dropped from now
// on.
func (h *held) newEpoch() {
	h.mu.Lock()
	h.epoch++
	h.clear()
	clear(h.acked)
	h.mu.Unlock()
}

// forgetAll forgets everything held, at the end of a run (reporting the
// gone deliveries, which are lost).
func (h *held) forgetAll() {
	h.mu.Lock()
	var lost []string
	for id, d := range h.m {
		if d.gone {
			lost = append(lost, id)
		}
	}
	h.clear()
	h.mu.Unlock()
	h.reportLost(lost)
}

func (h *held) clear() {
	for _, d := range h.retries {
		d.retryIdx = notQueued
	}
	h.retries = h.retries[:0]
	clear(h.m)
	h.bytes = 0
	h.count.Store(0)
	select {
	case h.room <- struct{}{}:
	default:
	}
}

// current reports whether d was read in the current epoch.
func (h *held) current(d *Delivery) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.epoch == h.epoch
}

// heldBytes returns the bytes of the entries held.
func (h *held) heldBytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes
}

// schedule puts d in the retry queue, due at clock nanos at. It returns
// false, having forgotten d (it stays pending: XAUTOCLAIM delivers it again
// after ClaimMinIdle), when limit entries wait already: a failing
// downstream cannot make one consumer hold the stream in memory.
func (h *held) schedule(d *Delivery, at int64, limit int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m[d.ID] != d {
		return false // forgotten meanwhile (a new epoch)
	}
	if len(h.retries) >= limit && !d.gone { // a gone one has no copy in Redis to wait in
		h.drop(d)
		h.count.Store(int64(len(h.m)))
		return false
	}
	d.retryAt = at
	heap.Push(&h.retries, d)
	return true
}

// due takes the retries due at clock nanos now out of the queue, marked as
// being claimed back, and returns them with the time the next one is due
// (0: none).
func (h *held) due(now int64) ([]*Delivery, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Delivery
	for len(h.retries) > 0 && h.retries[0].retryAt <= now {
		d := heap.Pop(&h.retries).(*Delivery)
		d.retryIdx = claiming // the leaser leaves it alone
		out = append(out, d)
	}
	var next int64
	if len(h.retries) > 0 {
		next = h.retries[0].retryAt
	}
	return out, next
}

// claimedBack records that the retrier claimed d back at clock nanos at.
func (h *held) claimedBack(d *Delivery, fields map[string]any, at int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m[d.ID] != d {
		return false
	}
	d.Fields = fields
	d.Count++
	d.touched = at
	d.retryIdx = notQueued
	return true
}

// leaseState returns when d's idle time was last reset, whether d is of
// the current epoch, and whether it was found lost.
func (h *held) leaseState(d *Delivery) (touched int64, current, lost bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.touched, d.epoch == h.epoch, d.lost
}

// touchedAt returns when d's idle time was last reset, and whether d is of
// the current epoch.
func (h *held) touchedAt(d *Delivery) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.touched, d.epoch == h.epoch
}

// toRenew returns the ids of held entries not waiting for a retry, not
// lost, whose idle time was last reset at or before clock nanos cutoff.
func (h *held) toRenew(cutoff int64) []any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []any
	for id, d := range h.m {
		if d.retryIdx == notQueued && !d.lost && d.touched <= cutoff {
			ids = append(ids, id)
		}
	}
	return ids
}

// renewed records what a lease run at clock nanos at found for ids: the
// taken ones (another consumer holds them) are lost; the acked ones (no
// longer pending, still in the stream) are lost too, unless their outcome
// is decided and the caller is not the acker (settling: the acker's own
// XACK may be what Redis saw; it checks before its XACK); the others were
// renewed (or are held only here: trimmed, their pending entry cleared).
// It returns those newly lost, once each.
func (h *held) renewed(ids []any, res leaseResult, at int64, byAcker bool) []*Delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	var newly []*Delivery
	for _, v := range ids {
		d, ok := h.m[v.(string)]
		if !ok {
			continue
		}
		switch {
		case res.taken[d.ID], res.acked[d.ID] && (!d.settling || byAcker):
			if !d.lost {
				d.lost = true
				newly = append(newly, d)
			}
		case res.acked[d.ID]:
			// Not renewed: the acker finds it lapsed and checks.
		default:
			d.touched = at
		}
	}
	return newly
}

// settle marks d as handed to the acker.
func (h *held) settle(d *Delivery) {
	h.mu.Lock()
	d.settling = true
	h.mu.Unlock()
}

// lapsed returns the deliveries of ds, not yet known lost, whose claim was
// last renewed at or before clock nanos cutoff: another consumer may have
// taken them over (this process was paused, or Redis unreachable).
func (h *held) lapsed(ds []*Delivery, cutoff int64) []*Delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Delivery
	for _, d := range ds {
		if !d.lost && d.touched <= cutoff && h.m[d.ID] == d {
			out = append(out, d)
		}
	}
	return out
}

// isLost reports whether d was found taken over by another consumer.
func (h *held) isLost(d *Delivery) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.lost
}

// goneUnlessHeld takes ids the server found deleted from the stream (and
// dropped from the pending list) and returns those lost for good: not
// held. Held ones, being handled or waiting for their retry, are marked
// gone: this copy is all that is left of them, and they are handled (and
// retried) from memory. Those acknowledged since the guarded read began
// were handled. Call it while guarded.
func (h *held) goneUnlessHeld(ids []string) []string {
	lost := ids[:0:0]
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		d, ok := h.m[id]
		_, acked := h.acked[id]
		switch {
		case ok:
			d.gone = true
		case !acked:
			lost = append(lost, id)
		}
	}
	return lost
}

// isGone reports whether d was found gone from the stream.
func (h *held) isGone(d *Delivery) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.gone
}

// retryHeap is a min-heap of deliveries by retryAt.
type retryHeap []*Delivery

func (q retryHeap) Len() int           { return len(q) }
func (q retryHeap) Less(i, j int) bool { return q[i].retryAt < q[j].retryAt }
func (q retryHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].retryIdx, q[j].retryIdx = i, j
}
func (q *retryHeap) Push(x any) {
	d := x.(*Delivery)
	d.retryIdx = len(*q)
	*q = append(*q, d)
}
func (q *retryHeap) Pop() any {
	old := *q
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	d.retryIdx = notQueued
	return d
}

func (q *retryHeap) remove(d *Delivery) {
	if d.retryIdx >= 0 && d.retryIdx < len(*q) && (*q)[d.retryIdx] == d {
		heap.Remove(q, d.retryIdx)
	}
	d.retryIdx = notQueued
}
