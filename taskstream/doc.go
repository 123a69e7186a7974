// Package taskstream gets a completion to the user who waits for it, on
// whichever pod that user is connected to: per-task Redis streams in the
// layout of the Python service, a hub that follows them live for all the
// subscribers of a pod on a few connections, the ready completion handler
// that writes outcomes to them, Await for Go callers, and an http.Handler
// for Server-Sent Events.
//
//	streams, _ := taskstream.New(rdb, taskstream.Config{})
//	hub, _ := taskstream.NewHub(streams, taskstream.HubConfig{})
//	go hub.Run(ctx)                                              // one per pod
//	handler, _ := taskstream.NewHandler(streams, registry, taskstream.HandlerConfig{})
//	consumer, _ := completion.NewConsumer(rdb, registry, handler, completion.Config{...})
//	events, _ := taskstream.NewSSEHandler(hub, registry, taskstream.SSEConfig{UserID: userOf})
//	mux.Handle("GET /tasks/{task_id}/events", events)
//	outcome, err := hub.AwaitOperation(ctx, registry, "op-42")   // from Go
//
// # Layout
//
// The keys are the Python service's, so that Go and Python pods share them
// (see [Config] to change the prefixes):
//
//	chat:stream:<task id>        stream: one entry per event, its JSON in field "data"
//	                             (XADD MAXLEN ~ 10000; TTL 1 h, refreshed on every write)
//	chat:task:pubsub:<task id>   pub/sub channel: each event's JSON, published after its XADD
//	chat:task:meta:<task id>     hash: the task, with its status (package redisregistry)
//
// Events are opaque JSON to this package: streams the Python service wrote
// replay unchanged. The events [Handler] writes are those of the AI SDK UI
// stream protocol, byte for byte as the Python service writes them (see
// [OutcomeEvent]):
//
//	{"type":"tool-output-available","toolCallId":"…","toolName":"…","output":"<result as JSON text>","success":true}
//	{"type":"error","errorText":"…"}
//	{"type":"finish"}
//
// # Delivery
//
// A subscription ([Hub.Subscribe]) starts after a stream entry id ("0-0":
// the whole stream), replays what the stream holds from there, then
// follows new entries, and ends after the finish event: each event once,
// in stream order, with no gap between replay and live, whatever Redis or
// the network do meanwhile. It is at most the stream: an event Redis did
// not keep (trimmed by MAXLEN, expired, lost in a failover) is not
// delivered. A subscriber that resumes with the last id it saw (an
// EventSource does so on its own with Last-Event-ID) gets the rest, on any
// pod.
//
// # The hub
//
// One [Hub] per pod serves every subscription of the pod. It holds one
// pub/sub connection, subscribed to the channels of the tasks that have
// subscribers on this pod. A message on a task's channel makes it read the
// task's stream after the last id of each of its subscribers (XRANGE), in
// pipelines of up to ReadBatch tasks on at most Readers connections;
// the payload is not used, only the stream counts. The same read follows a
// new subscription, the confirmation of a channel subscription (closing
// the window between the replay and the first notification), and, for
// every task, each reconnect of the pub/sub connection, so that nothing
// published while it was down is missed. A canary published every
// HealthCheckInterval through the same connections (it waits for a
// reader's slot) checks that the pub/sub connection still hears what
// writers publish (after a Sentinel failover go-redis moves its pooled
// connections to the new master, not a pub/sub one), and a periodic
// resync (ResyncInterval) covers writers that append without publishing.
// Classic PUBLISH reaches every node of a Redis Cluster, so one pub/sub
// connection serves a cluster too.
//
// A subscription costs the hub no goroutine and no connection: under 1 KB
// (874 bytes measured at 10,000 subscriptions), plus the events it buffers
// (at most HubConfig.Buffer); the subscriber's own goroutine, if it keeps
// one blocked in Next, adds its stack.
// While a subscription replays history, the hub reads only what fits in its
// buffer and reads on when the subscriber has taken half; a live
// subscription whose buffer is full when new events arrive is cut off with
// [ErrSlowSubscriber] (it resumes from its last id, losing nothing). The
// hub never waits for a subscriber.
//
// Why this design: measured on one pod, 2 CPUs, Redis 7.0 on loopback,
// completions at 1,000/s over random tasks, from Publish to the subscriber
// holding the event, medians of 3 runs (cd bench && go run . -mode fanout
// -fanout-impl baseline,completion,completion-sse,naive,xread-multi; see
// bench/README.md):
//
//	10,000 subscribers    connections  p50 / p99       memory per idle subscriber   Redis CPU per event
//	                                                   Go (with its goroutine) / Redis   for the fan-out
//	hub (this package)    3            0.58 / 2.3 ms   4.1 KB / 0.25 KB                27 µs
//	XREAD per subscriber  10,000       0.51 / 1.0 ms   79 KB / 35 KB                   61 µs
//	multiplexed XREAD     4            14.9 / 46 ms    0.3 KB / 0.3 KB                 3,340 µs
//
// With 1,000 subscribers reading the SSE handler over HTTP the hub's p50 /
// p99 are 0.53 / 2.5 ms. The hub costs one round trip more than a reader
// blocked on its own stream (the notification, then the XRANGE), a tenth of
// a millisecond.
//
// One blocking XREAD per subscriber needs a connection per subscriber (and
// Redis's maxclients), 64 KB of go-redis buffers each and 35 KB in Redis. A
// few blocking XREADs over thousands of keys each must send every key and
// id again each time one stream moves: Redis spends 3.3 ms of CPU per event
// registering 2,500 keys, and at 10,000 subscribers it is saturated by
// 1,000 events/s (and on Redis Cluster a multi-key XREAD cannot leave one
// slot, which the Python layout's keys do not share). A notification channel with stream
// re-reads costs one PUBLISH per event, which the Python writers already
// send, and one XRANGE of one key per notified task: its cost follows the
// events, not the subscribers.
//
// # Lifecycle
//
// [Hub.Run] blocks until its context ends; it returns nil only after every
// goroutine it started has exited, and ends the open subscriptions with
// [ErrHubStopped]. [Hub.Subscribe] may be called before Run (the
// subscription is served once Run starts, so an HTTP server can start
// first); while Run stops and after it returned it fails with
// [ErrHubStopped]. Redis errors never end Run: it backs off, reconnects and
// re-reads. The package never closes the Redis client it is given.
//
// # Writers
//
// [Handler] is the completion.CompletionHandler that writes an operation's
// outcome, the finish event and the task's status change, in one Lua script
// on a single node or Sentinel (with the XACK of the completion's entry),
// and in an order that may repeat but never loses across cluster nodes.
// [Streams.Append] and [Streams.Finish] write other events (progress,
// text) the same way the Python service does, announcing each on the
// task's channel in the same script.
//
// All types are safe for concurrent use.
package taskstream
