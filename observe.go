package completion

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/streamrelay/completion/internal/engine"
	"github.com/streamrelay/completion/internal/safetext"
)

// EventKind says what an [Event] reports.
type EventKind int

const (
	// EventHandled: the handler returned nil; the entry is being
	// acknowledged. Duration is the handler's run time.
	EventHandled EventKind = iota + 1
	// EventFailed: the handler returned an error or panicked, or the
	// registry failed; the entry will be retried (EventRetryScheduled) or
	// dead-lettered (EventDeadLettered). Duration is the handler's run time
	// (zero when the handler was not called).
	EventFailed
	// EventRetryScheduled: a failed entry will be delivered again after
	// Delay.
	EventRetryScheduled
	// EventDeadLettered: the entry was moved to the dead-letter stream;
	// Reason is one of the Reason constants.
	EventDeadLettered
	// EventDropped: an entry for an unknown task was acknowledged without
	// handling (NotFoundDrop).
	EventDropped
	// EventDuplicate: duplicate suppression acknowledged a completion
	// handled before.
	EventDuplicate
	// EventReclaimed: an entry was taken over from another consumer, or
	// re-read from this consumer's own pending list.
	EventReclaimed
	// EventDeletedWhilePending: a pending entry was trimmed or deleted from
	// the stream; its completion is lost.
	EventDeletedWhilePending
	// EventLeaseLost: another consumer took over an entry this one was
	// still handling.
	EventLeaseLost
	// EventRedisError: a Redis call failed; the consumer retries. Err says
	// why.
	EventRedisError
	// EventPartitionAcquired: this consumer took ownership of partition
	// Partition (see Config.Partitions).
	EventPartitionAcquired
	// EventPartitionReleased: this consumer stopped reading partition
	// Partition and handed it back: to balance the group, at shutdown, or
	// because it could not renew its ownership.
	EventPartitionReleased
	// EventPartitionLost: another consumer owns partition Partition, which
	// this consumer was reading (its ownership expired: it could not renew
	// it in time). Entries it was handling may be handled again.
	EventPartitionLost
)

var eventNames = [...]string{
	EventHandled:             "handled",
	EventFailed:              "failed",
	EventRetryScheduled:      "retry_scheduled",
	EventDeadLettered:        "dead_lettered",
	EventDropped:             "dropped",
	EventDuplicate:           "duplicate",
	EventReclaimed:           "reclaimed",
	EventDeletedWhilePending: "deleted_while_pending",
	EventLeaseLost:           "lease_lost",
	EventRedisError:          "redis_error",
	EventPartitionAcquired:   "partition_acquired",
	EventPartitionReleased:   "partition_released",
	EventPartitionLost:       "partition_lost",
}

// String returns the kind's name in snake case, suitable as a metric label.
func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one thing that happened in a [Consumer], reported to
// Config.Observer. Fields that do not apply to a kind are zero.
type Event struct {
	Kind        EventKind
	EntryID     string
	OperationID string
	TaskID      string
	Deliveries  int64
	// Duration is the handler's run time (EventHandled, EventFailed).
	Duration time.Duration
	// Delay is the wait before the next delivery (EventRetryScheduled).
	Delay time.Duration
	// Reason is the dead-letter reason (EventDeadLettered).
	Reason string
	// Err is the failure (EventFailed, EventDeadLettered,
	// EventRedisError).
	Err error
	// Partition is the partition's index (EventPartitionAcquired,
	// EventPartitionReleased, EventPartitionLost).
	Partition int
}

// Observer receives a [Consumer]'s events, e.g. to feed metrics. Observe is
// called synchronously from the consumer's goroutines, from several at
// once: it must be safe for concurrent use, fast, and must not block.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to an [Observer].
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// Middleware wraps a [CompletionHandler], e.g. with tracing, logging or
// metrics, without forking the library.
type Middleware func(next CompletionHandler) CompletionHandler

// Chain returns h wrapped in the middlewares, the first outermost: Chain(h,
// a, b) runs a, then b, then h.
func Chain(h CompletionHandler, mws ...Middleware) CompletionHandler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// observe hands an engine's event to the Observer, converted, recovering a
// panic of the Observer.
func (c *Consumer) observe(e engine.Event) {
	if c.cfg.Observer == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil && c.allowLog("observer-panic") {
			c.log.Error("Observer panicked; event dropped", slog.String("event", EventKind(e.Kind).String()), slog.String("panic", logText(fmt.Sprint(p))))
		}
	}()
	c.cfg.Observer.Observe(Event{
		Kind: EventKind(e.Kind), EntryID: e.EntryID, OperationID: e.OperationID, TaskID: e.TaskID,
		Deliveries: e.Deliveries, Duration: e.Duration, Delay: e.Delay, Reason: e.Reason, Err: e.Err, Partition: e.Partition,
	})
}

// logText makes untrusted text safe for a log line: at most 256 bytes,
// control characters and invalid UTF-8 escaped, so that error texts and
// panic values that carry user data can neither flood the log nor forge
// lines.
func logText(s string) string { return safetext.Cap(s, 256) }
