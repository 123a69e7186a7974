package engine

import "time"

// EventKind says what an Event reports. The values are those of
// completion.EventKind, which converts them one to one.
type EventKind int

// The kinds, in completion.EventKind's order.
const (
	EventHandled EventKind = iota + 1
	EventFailed
	EventRetryScheduled
	EventDeadLettered
	EventDropped
	EventDuplicate
	EventReclaimed
	EventDeletedWhilePending
	EventLeaseLost
	EventRedisError
	EventPartitionAcquired
	EventPartitionReleased
	EventPartitionLost
)

// Event is one thing that happened, for the consumer's Observer.
type Event struct {
	Kind        EventKind
	EntryID     string
	OperationID string
	TaskID      string
	Deliveries  int64
	Duration    time.Duration
	Delay       time.Duration
	Reason      string
	Err         error
	Partition   int
}

// EventOf returns an event of kind about d.
func EventOf(kind EventKind, d *Delivery) Event {
	return Event{Kind: kind, EntryID: d.ID, OperationID: d.Msg.OperationID, TaskID: d.Msg.TaskID, Deliveries: d.Count}
}
