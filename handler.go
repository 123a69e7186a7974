package completion

import (
	"context"
	"encoding/json"
)

// Completion is one completed operation, delivered to a [CompletionHandler]
// together with the task it belongs to.
type Completion struct {
	// Task is what the TaskRegistry returned for the message; it has passed
	// [Task.Validate].
	Task Task
	// Message is the decoded completion. Message.Result is read-only: it may
	// share memory with the entry the consumer read.
	Message Message
	// EntryID is the stream entry id. It is stable across redeliveries and
	// can serve as an idempotency key.
	EntryID string
	// Deliveries counts the deliveries of this entry, this one included: 1
	// on the first, more on redeliveries after a failure or a crash.
	Deliveries int64
	// Stream is the key of the stream the entry was read from: the
	// consumer's Config.Stream, or with Config.Partitions > 1 the
	// partition's key. With Group and EntryID it names the pending entry,
	// for a handler that acknowledges it itself, atomically with its own
	// writes (the consumer's later XACK of it then does nothing).
	Stream string
	// Group is the consumer group the entry was delivered to.
	Group string

	// values are the entry's fields as the consumer read them (go-redis's
	// map, shared, not copied: Field must not cost an allocation per
	// message). Nil for a Completion built by hand.
	values map[string]any
}

// Field returns the value of the stream entry's field name: one added with
// [WithField] (or by any producer that writes fields next to [DataField]),
// such as a W3C "traceparent" for a tracing [Middleware]. It returns "" when
// the entry has no such field, and also for a Completion not read from a
// stream (one built by hand, in a handler's unit test, say). Field(DataField)
// returns the message's raw JSON.
//
// Field does not allocate and only reads: goroutines the handler starts may
// call it at the same time while the handler runs.
func (c *Completion) Field(name string) string {
	s, _ := c.values[name].(string) // go-redis hands field values over as strings
	return s
}

// CompletionHandler receives completions.
//
// HandleCompletion is called once per delivery. A nil return acknowledges
// the entry. An error asks for a retry: the entry stays pending and is
// delivered again after Config.RetryBackoff (growing with each delivery),
// until Config.MaxDeliveries is reached and it is dead-lettered. An error
// made by [Permanent] dead-letters it at once. A panic is recovered and
// counts as an error.
//
// Delivery is at least once: after a crash, a lost acknowledgement or a
// failover the same completion can arrive again, possibly on another pod.
// Handlers must tolerate that (use [Completion.EntryID] or the operation id
// as an idempotency key, or enable Config.DedupTTL).
//
// HandleCompletion is called from up to Config.Concurrency goroutines at
// once, and must honour ctx: it is cancelled when the consumer gives up
// waiting at shutdown.
type CompletionHandler interface {
	HandleCompletion(ctx context.Context, c *Completion) error
}

// HandlerFunc adapts a function to a [CompletionHandler].
type HandlerFunc func(ctx context.Context, c *Completion) error

// HandleCompletion calls f(ctx, c).
func (f HandlerFunc) HandleCompletion(ctx context.Context, c *Completion) error {
	return f(ctx, c)
}

// ByOutcome is a [CompletionHandler] with one function for successful
// operations and one for failed ones, as the Python service splits them.
// A nil function acknowledges its completions without doing anything.
type ByOutcome struct {
	// Success receives the task and the operation's result (a JSON object,
	// a JSON string, or nil for null).
	Success func(ctx context.Context, task Task, result json.RawMessage) error
	// Failure receives the task and the operation's error text.
	Failure func(ctx context.Context, task Task, errText string) error
}

// HandleCompletion calls h.Success or h.Failure depending on
// c.Message.Success.
func (h ByOutcome) HandleCompletion(ctx context.Context, c *Completion) error {
	if c.Message.Success {
		if h.Success == nil {
			return nil
		}
		return h.Success(ctx, c.Task, c.Message.Result)
	}
	if h.Failure == nil {
		return nil
	}
	return h.Failure(ctx, c.Task, c.Message.Error)
}
