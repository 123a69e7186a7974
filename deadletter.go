package completion

import "github.com/streamrelay/completion/internal/wire"

// Dead-letter reasons, written to the dl_reason field of a dead-letter
// entry.
const (
	// ReasonMalformed: the entry has no "data" field, or it is not a valid
	// message (not JSON, wrong types, missing ids, a number a double cannot
	// hold).
	ReasonMalformed = wire.ReasonMalformed
	// ReasonOversize: the entry ("data" and any other fields) is larger
	// than Config.MaxPayloadBytes, has more than 1000 fields (what Redis's
	// Lua can copy), or has ids or an error text over their limits.
	ReasonOversize = wire.ReasonOversize
	// ReasonTaskNotFound: the registry knows neither the operation id nor
	// the task id (under NotFoundDeadLetter).
	ReasonTaskNotFound = wire.ReasonTaskNotFound
	// ReasonInvalidTask: the registry returned a task without a field
	// Config.RequiredTaskFields requires.
	ReasonInvalidTask = wire.ReasonInvalidTask
	// ReasonTaskMismatch: the entry's task id and the id of the task its
	// operation id names differ (see Config.TrustOperationID).
	ReasonTaskMismatch = wire.ReasonTaskMismatch
	// ReasonPermanent: the handler returned an error made by [Permanent].
	ReasonPermanent = wire.ReasonPermanent
	// ReasonMaxDeliveries: the entry was delivered Config.MaxDeliveries
	// times without success.
	ReasonMaxDeliveries = wire.ReasonMaxDeliveries
)

// Fields a dead-letter entry carries besides the original entry's fields.
// The original fields are copied in their order, duplicates included; an
// original field whose name starts with "dl_" or "orig_" gets the prefix
// "orig_", which a redrive strips again, so that every name round-trips.
//
// A dead letter of reason "oversize" for an entry over
// Config.MaxPayloadBytes or with more than 1000 fields holds none of the original
// fields: the entry is too big to copy. It holds "dl_size" (its bytes),
// "dl_fields" (its field count) and "dl_excerpt" (the first 256 bytes of
// its data field) instead, and cannot be redriven; the original stays in the
// source stream, under DeadLetterIDField, until the stream is trimmed.
const (
	DeadLetterReasonField     = wire.DeadLetterReasonField     // one of the Reason constants
	DeadLetterErrorField      = wire.DeadLetterErrorField      // the error text, at most 1 KiB
	DeadLetterDeliveriesField = wire.DeadLetterDeliveriesField // delivery count, decimal
	DeadLetterConsumerField   = wire.DeadLetterConsumerField   // the consumer that moved it
	DeadLetterGroupField      = wire.DeadLetterGroupField      // the consumer group
	DeadLetterStreamField     = wire.DeadLetterStreamField     // the source stream
	DeadLetterIDField         = wire.DeadLetterIDField         // the entry id in the source stream
	DeadLetterTimeField       = wire.DeadLetterTimeField       // RFC 3339 time, UTC, milliseconds
)
