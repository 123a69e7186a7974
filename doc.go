// Package completion delivers "operation finished" notifications between
// services through a Redis Stream, so that whichever pod is alive hears about
// each completion, even if the pod that started the operation has died.
//
// A producer calls [Publish] to append a [Message] (operation id, task id,
// success, result or error) to the stream. Every API server pod runs a
// [Consumer]: it reads the stream through a consumer group, finds the task
// the message belongs to in a [TaskRegistry], and hands it to a
// [CompletionHandler]. The wire format is the one a Python service of the
// same design writes and reads, so Go and Python producers and consumers can
// share a stream.
//
//	reg := &completion.MemoryRegistry{}
//	h := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
//		return notify(ctx, c.Task.SessionID, c.Message)
//	})
//	c, err := completion.NewConsumer(rdb, reg, h, completion.Config{})
//	if err != nil { ... }
//	err = c.Run(ctx) // blocks until ctx is cancelled
//
// The pieces beside the consumer: package redisregistry is a [TaskRegistry] over
// the Python service's Redis layout; [Inspector] (and the completion
// command, cmd/completion) shows and repairs streams, pending entries and
// dead letters; [Config.Observer] and [Chain] hook metrics and tracing in;
// [Config.Partitions] with [WithPartitions] spreads one logical stream over
// a Redis Cluster, each partition read by one consumer of the group at a
// time, so that a task's completions keep their order across pods.
//
// # Delivery contract
//
// Delivery is at least once. An entry is acknowledged (XACK) only when its
// handler returned nil, or when it was moved to the dead-letter stream.
// Until then it stays pending in the group, and is delivered again:
//
//   - after a handler error, by this consumer, after Config.RetryBackoff,
//     doubling per delivery up to Config.MaxRetryBackoff;
//   - after a crash, by any consumer of the group, once the entry has been
//     idle for Config.ClaimMinIdle (XAUTOCLAIM), or by the same consumer name
//     when it starts again (it re-reads its own pending entries first).
//
// A handler that runs long keeps its entries: the consumer renews their idle
// time every Config.LeaseInterval, so no other consumer takes them over.
//
// Nothing loops forever. An entry that was delivered Config.MaxDeliveries
// times, that cannot be decoded, whose task is invalid or unknown (see
// [NotFoundPolicy]), or whose handler returned a [Permanent] error, is moved
// to the dead-letter stream (Config.DeadLetterStream) with the reason, and
// acknowledged. On a single Redis node the move is one atomic script.
//
// Handlers must tolerate duplicates: after a crash between the handler's
// success and the XACK, after a failover, or when a paused pod wakes up to
// find its entry reclaimed, the same completion arrives again. Use
// [Completion.EntryID] or the operation id as an idempotency key, or set
// Config.DedupTTL.
//
// # Lifecycle
//
// [Consumer.Run] blocks; cancelling its context stops it. It interrupts a
// blocked read at once (with CLIENT UNBLOCK), lets running handlers finish
// within Config.ShutdownTimeout, acknowledges what finished, leaves the rest
// pending, and returns only after every goroutine it started has exited.
// Redis errors never end Run: it backs off and resumes, and recreates the
// group if the stream is deleted. Only a refusal that retrying cannot fix
// ([ErrRedisFatal], e.g. a missing ACL permission) ends it with an error.
// The library never closes the Redis client it is given.
package completion
