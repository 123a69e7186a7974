// Package engine consumes one Redis stream through a consumer group: the
// machinery behind completion.Consumer.Run, for one stream or one partition.
//
// An Engine runs one goroutine per job, each a type in a file of its own,
// given only what it uses:
//
//	reader     reader.go     XGROUP CREATE, the own pending list, XREADGROUP; decodes and dispatches
//	workers    workers.go    Processor.Process each delivery, then apply its Outcome
//	acker      acker.go      XACK in batches, with duplicate-suppression records and dead-letter moves
//	retrier    retrier.go    deliver failed entries again when their backoff is over (XCLAIM)
//	reclaimer  reclaimer.go  take over entries other consumers left pending (XAUTOCLAIM)
//	leaser     leaser.go     renew the claim on entries held long; find entries lost to others
//	janitor    janitor.go    the member heartbeat; remove departed consumers from the group
//
// The one state they share is the held set (held.go): the entries this
// engine holds, its epoch, the retry queue. Deliveries reach the workers
// through the dispatcher (dispatch.go), whoever found them. What the
// workers do with a delivery is decided by the Processor (the root package
// implements it: duplicate check, task lookup, the handler) and returned as
// an Outcome (outcome.go): acknowledge, retry, dead-letter, or leave
// pending. Redis errors go through one path (redis.go). Time comes from a
// clock.Clock, so tests can move it.
package engine
