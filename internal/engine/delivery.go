package engine

import (
	"context"

	"github.com/streamrelay/completion/internal/wire"
)

// Processor decides what becomes of each delivery. The root package
// implements it: duplicate suppression, the task lookup, the handler.
type Processor interface {
	// Prefetch is called with each batch of deliveries before they reach
	// the workers, e.g. to look their tasks up in one round trip. It may
	// set Delivery.Pre.
	Prefetch(ctx context.Context, ds []*Delivery)
	// Process handles one delivery and returns what becomes of it. ctx is
	// cancelled when the handler must stop (shutdown, or the partition
	// changes owner). It is called from up to Concurrency goroutines.
	Process(ctx context.Context, d *Delivery) Outcome
}

// Delivery is one entry the engine holds. The exported fields are the
// Processor's to read (and Pre to set); the others belong to the engine.
type Delivery struct {
	// ID is the entry id.
	ID string
	// Fields are the entry's fields, as go-redis returned them.
	Fields map[string]any
	// Msg is the decoded message when Bad is nil.
	Msg wire.Message
	// Count is the delivery count, this delivery included.
	Count int64
	// Bad is why the entry cannot be decoded (or is too big); Reason is
	// then its dead-letter reason.
	Bad    error
	Reason string
	// Source names where the entry is pending; the engine's deliveries
	// share one.
	Source *Source
	// Pre is the Processor's: what Prefetch found for it.
	Pre any

	epoch    uint64 // held.epoch when read
	touched  int64  // clock nanos when Redis last reset its idle time
	retryAt  int64  // clock nanos, while in the retry queue
	retryIdx int    // index in the retry queue, or notQueued / claiming
	size     int    // bytes, for the read-ahead budget
	oversize bool   // over MaxPayloadBytes or MaxEntryFields: dead-lettered without its fields
	lost     bool   // another consumer took it over, or it was acknowledged elsewhere
	settling bool   // handed to the acker: its outcome is decided
	// gone: deleted from the stream (trimmed, XDEL) while held, and its
	// pending entry cleared: this copy is all that is left of it. It is
	// retried from memory, and counted as deleted while pending if it is
	// let go unhandled.
	gone     bool
	dl       *deadLetterMove
	record   string // Outcome.Record to write before the XACK
	recordMS int64  // its TTL in milliseconds
}

// Source is the stream and group an engine reads.
type Source struct {
	Stream, Group string
}

// Values of Delivery.retryIdx outside the retry queue.
const (
	notQueued = -1 // held, not waiting for a retry
	claiming  = -2 // its retry is due: the retrier is claiming it back
)

// release drops what a settled (or skipped) delivery refers to: the
// deliveries of one read share an array, which stays in memory while any of
// them is held, and must not keep the entries of the others with it. Only
// the goroutine that settles d calls it, once nothing else reads d.
func (d *Delivery) release() {
	d.Fields, d.Msg, d.Pre, d.Bad, d.dl = nil, wire.Message{}, nil, nil, nil
}
