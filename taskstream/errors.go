package taskstream

import "errors"

// Sentinel errors. Test for them with [errors.Is]; the errors the package
// returns wrap them with the details (the task id, the field, the value).
// Invalid configurations wrap [completion.ErrInvalidConfig] and a nil client
// [completion.ErrNilArgument] instead.
var (
	// ErrInvalidTaskID is returned for a task id that is empty, longer than
	// MaxTaskIDBytes or not valid UTF-8. Nothing is sent to Redis.
	ErrInvalidTaskID = errors.New("taskstream: invalid task id")

	// ErrInvalidID is returned for a stream entry id (the lastID of
	// [Hub.Subscribe], a Last-Event-ID) that is not of the form
	// "<milliseconds>-<sequence>" (or "0").
	ErrInvalidID = errors.New("taskstream: malformed stream id")

	// ErrInvalidEvent is returned by [Streams.Append] for an event that is
	// not valid JSON or not valid UTF-8. Nothing is written.
	ErrInvalidEvent = errors.New("taskstream: invalid event")

	// ErrHubRunning is returned by [Hub.Run] when the hub already runs.
	ErrHubRunning = errors.New("taskstream: hub is already running")

	// ErrHubStopped ends the subscriptions that were open when [Hub.Run]
	// returned: [Subscription.Next] returns it after the events it had
	// buffered. [Hub.Subscribe] (and so [Hub.Await]) returns it while Run
	// stops and after it returned, until the hub runs again; the SSE
	// handler answers 503.
	ErrHubStopped = errors.New("taskstream: hub stopped")

	// ErrSlowSubscriber ends a subscription that did not take its events
	// fast enough: its buffer (HubConfig.Buffer events) was full when live
	// events arrived. [Subscription.Next] returns it after the buffered
	// events; subscribe again from the last id taken to resume, losing
	// nothing.
	ErrSlowSubscriber = errors.New("taskstream: subscriber too slow, cut off")

	// ErrClosed is returned by [Subscription.Next] after
	// [Subscription.Close].
	ErrClosed = errors.New("taskstream: subscription closed")

	// ErrNoOutcome is returned by [Hub.Await] when the task's stream
	// finished without an outcome event (a tool output or an error), or when
	// the task is no longer running and its stream holds none.
	ErrNoOutcome = errors.New("taskstream: the task finished without an outcome")
)
