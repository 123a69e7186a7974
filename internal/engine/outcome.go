package engine

import "time"

// OutcomeKind is what becomes of a delivery.
type OutcomeKind int

const (
	// Ack: acknowledge the entry (after writing Outcome.Record, if set).
	Ack OutcomeKind = iota
	// Retry: keep it pending and deliver it again after Outcome.Delay.
	Retry
	// DeadLetter: move it to the dead-letter stream with Outcome.Reason
	// and Outcome.Err, then acknowledge it.
	DeadLetter
	// Leave: keep it pending, do nothing more: a later delivery, here or
	// elsewhere, takes it (its handler was cut off at shutdown or because
	// the partition changes owner).
	Leave
)

// Outcome is the Processor's decision about one delivery.
type Outcome struct {
	Kind   OutcomeKind
	Reason string        // DeadLetter: one of the wire.Reason constants
	Err    error         // DeadLetter, Retry: why
	Delay  time.Duration // Retry: how long to wait
	// Record, for Ack, is the key of a duplicate-suppression record to SET
	// (with RecordTTL, value the entry id) before the XACK: if the SET
	// fails, the entry is not acknowledged and the acker tries again.
	Record    string
	RecordTTL time.Duration
	// RedisErr is a Redis call of the Processor that failed (RedisOp names
	// it): the engine reports it as its own, so that a refusal retrying
	// cannot fix stops it.
	RedisErr error
	RedisOp  string
}
