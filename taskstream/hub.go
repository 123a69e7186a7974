package taskstream

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamrelay/completion"
)

// Hub serves live subscriptions to task streams from one pod. It holds one
// pub/sub connection, subscribed to the channels of the tasks that have
// subscribers on this pod, and re-reads a task's stream (XRANGE from each
// subscriber's last id, pipelined over a few connections) when its channel
// announces a write, when a subscriber joins, and after every reconnect. So
// it serves any number of subscriptions on at most Readers+1 connections,
// never blocks on a subscriber, and misses nothing a lost connection hid:
// every event the stream kept reaches every subscriber once, in order.
//
// Classic PUBLISH reaches every node of a Redis Cluster, so one connection
// serves a cluster too.
//
// [Hub.Run] runs it; [Hub.Subscribe] works while Run runs. A Hub is safe for
// concurrent use.
type Hub struct {
	streams *Streams
	cfg     HubConfig
	log     *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond // readers wait on it for queued tasks; guarded by mu
	running  bool       // Run runs
	stopping bool       // Run is returning or returned: no new subscriptions, readers exit
	tasks    map[string]*task
	subs     int     // open subscriptions
	urgent   []*task // tasks to read soon: notifications, new subscribers, reconnects
	idle     []*task // tasks to read when nothing is urgent: the periodic resync
	// channelChanges are the tasks whose channel subscription may have to
	// change (a first subscriber came, or the last left); changesWake tells
	// the listener.
	channelChanges map[string]struct{}
	changesWake    chan struct{}
	// slots holds one token per ordinary connection the hub may use at
	// once (Readers): every pipeline, the readers' and the canary's,
	// takes one, so the hub never has more than Readers pooled
	// connections busy (per cluster node).
	slots chan struct{}

	connected     atomic.Bool
	notifications atomic.Int64
	reads         atomic.Int64
	pipelines     atomic.Int64
	reconnects    atomic.Int64
	cutOff        atomic.Int64
	readErrors    atomic.Int64
}

// task is a task with subscribers on this pod.
type task struct {
	id   string
	subs []*Subscription
	// Queueing: inUrgent / inIdle while in that queue, reading while a
	// reader has it, again when something asked for a read meanwhile.
	inUrgent, inIdle, reading, again bool
}

// NewHub returns a hub over streams. Zero fields of cfg take their
// defaults; an invalid field is an error wrapping
// [completion.ErrInvalidConfig] that names it, a nil streams one wrapping
// [completion.ErrNilArgument]. Call [Hub.Run] to start it.
func NewHub(streams *Streams, cfg HubConfig) (*Hub, error) {
	if streams == nil {
		return nil, fmt.Errorf("%w: taskstream.NewHub: streams", completion.ErrNilArgument)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &Hub{
		streams:        streams,
		cfg:            cfg,
		log:            log,
		tasks:          make(map[string]*task),
		channelChanges: make(map[string]struct{}),
		changesWake:    make(chan struct{}, 1),
		slots:          make(chan struct{}, cfg.Readers),
	}
	h.cond = sync.NewCond(&h.mu)
	return h, nil
}

// Config returns the hub's configuration with defaults filled in.
func (h *Hub) Config() HubConfig { return h.cfg }

// Streams returns the task streams the hub reads.
func (h *Hub) Streams() *Streams { return h.streams }

// Run runs the hub until ctx ends: the pub/sub listener, the channel
// subscriptions and the readers. Redis errors never end it: it backs off,
// reconnects and re-reads every task. When ctx ends, the open subscriptions
// end with [ErrHubStopped] (after the events they buffered), and Run
// returns nil once every goroutine it started has exited. It returns
// [ErrHubRunning] at once if the hub already runs. A hub may run again
// after Run returned.
func (h *Hub) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.running {
		h.mu.Unlock()
		return ErrHubRunning
	}
	h.running, h.stopping = true, false
	h.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := newListener(h)
	var wg sync.WaitGroup
	wg.Go(func() { l.receive(ctx) })
	wg.Go(func() { l.manage(ctx) })
	for range h.cfg.Readers {
		wg.Go(func() { h.readLoop(ctx) })
	}

	<-ctx.Done()
	h.mu.Lock()
	h.stopping = true
	h.cond.Broadcast()
	h.mu.Unlock()
	l.close()
	wg.Wait()

	h.mu.Lock()
	var subs []*Subscription
	for _, t := range h.tasks {
		subs = append(subs, t.subs...)
	}
	h.tasks = make(map[string]*task)
	h.urgent, h.idle = nil, nil
	clear(h.channelChanges)
	h.subs = 0
	h.connected.Store(false)
	h.running = false
	h.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		s.endLocked(ErrHubStopped)
		s.mu.Unlock()
		s.signal()
		s.stop()
	}
	return nil
}

// Running reports whether [Hub.Run] runs, for health checks.
func (h *Hub) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running && !h.stopping
}

// Connected reports whether the hub's pub/sub connection is up: it has
// answered since it was last (re)established. For health checks.
func (h *Hub) Connected() bool { return h.connected.Load() }

// Subscribe subscribes to task taskID's stream from the entry after lastID
// ("0-0", "0" or "" for the whole stream): the hub replays the stream from
// there and then delivers new events as they are written, each once and in
// order, with no gap between the two, and the subscription ends after the
// finish event. A subscription from an id at or after the stream's finish
// event ends at once ([Subscription.Next] returns io.EOF).
//
// It ends as well when ctx ends (Next then returns ctx's error), on
// [Subscription.Close], when it is too slow (see HubConfig.Buffer), and
// when the hub stops. Subscribe does not check that the task exists (the
// SSE handler and Await ask the registry); a stream that does not exist
// yet is waited for, and never created.
//
// It returns an error wrapping [ErrInvalidTaskID] or [ErrInvalidID] for
// bad input, [ErrHubStopped] while Run stops and after it returned (until
// it runs again), and ctx's error when ctx has ended. It does not wait for
// Redis. Before the hub's first Run, Subscribe works: the subscription is
// served once Run starts, so that an HTTP server may start before the hub.
func (h *Hub) Subscribe(ctx context.Context, taskID, lastID string) (*Subscription, error) {
	if err := checkTaskID(taskID); err != nil {
		return nil, err
	}
	last, err := parseID(lastID)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := newSubscription(h, taskID, last)
	stop := context.AfterFunc(ctx, func() { s.finish(ctx.Err(), true) })
	s.mu.Lock()
	s.stopCtx = stop
	s.mu.Unlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		s.stop()
		return nil, ErrHubStopped
	}
	s.mu.Lock()
	ended := s.end != nil // ctx ended since the check
	s.mu.Unlock()
	if ended {
		return nil, ctx.Err()
	}
	t := h.tasks[taskID]
	if t == nil {
		t = &task{id: taskID}
		h.tasks[taskID] = t
		h.channelChangedLocked(taskID)
	}
	t.subs = append(t.subs, s)
	h.subs++
	h.markLocked(t, true)
	return s, nil
}

// remove takes s out of its task; the last subscriber of a task takes the
// task out of the hub and its channel out of the subscription.
func (h *Hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.tasks[s.taskID]
	if t == nil {
		return
	}
	i := slices.Index(t.subs, s)
	if i < 0 {
		return
	}
	t.subs = slices.Delete(t.subs, i, i+1)
	h.subs--
	if len(t.subs) == 0 {
		delete(h.tasks, t.id)
		h.channelChangedLocked(t.id)
	}
}

// wantMore asks for a read for s, which has made room in its buffer.
func (h *Hub) wantMore(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.tasks[s.taskID]; t != nil {
		h.markLocked(t, true)
	}
}

// notify asks for a read of task taskID, whose stream was written.
func (h *Hub) notify(taskID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.tasks[taskID]; t != nil {
		h.markLocked(t, true)
	}
}

// resyncAll asks for a read of every task. After a reconnect (catchUp) the
// reads are urgent and every subscription catches up as after Subscribe;
// the periodic resync reads when nothing is urgent.
func (h *Hub) resyncAll(catchUp bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.tasks {
		if catchUp {
			for _, s := range t.subs {
				s.mu.Lock()
				s.catchingUp = true
				s.mu.Unlock()
			}
		}
		h.markLocked(t, catchUp)
	}
}

// markLocked queues t for a read. h.mu must be held.
func (h *Hub) markLocked(t *task, urgent bool) {
	switch {
	case t.reading:
		t.again = true
		return
	case urgent && !t.inUrgent:
		t.inUrgent = true
		h.urgent = append(h.urgent, t)
	case !urgent && !t.inUrgent && !t.inIdle:
		t.inIdle = true
		h.idle = append(h.idle, t)
	default:
		return
	}
	h.cond.Signal()
}

// channelChangedLocked records that task id's channel subscription may
// have to change. h.mu must be held.
func (h *Hub) channelChangedLocked(id string) {
	h.channelChanges[id] = struct{}{}
	select {
	case h.changesWake <- struct{}{}:
	default:
	}
}

// HubStats are a hub's figures, for metrics and health checks.
type HubStats struct {
	Subscriptions int   // open subscriptions
	Tasks         int   // tasks with subscriptions
	Connected     bool  // the pub/sub connection is up
	Notifications int64 // messages received on task channels
	Reads         int64 // XRANGEs of task streams
	Pipelines     int64 // pipelines of XRANGEs
	ReadErrors    int64 // pipelines that failed
	Reconnects    int64 // pub/sub connections lost and re-established
	CutOff        int64 // subscriptions ended with ErrSlowSubscriber
}

// Stats returns the hub's figures. The counters count from NewHub.
func (h *Hub) Stats() HubStats {
	h.mu.Lock()
	subs, tasks := h.subs, len(h.tasks)
	h.mu.Unlock()
	return HubStats{
		Subscriptions: subs,
		Tasks:         tasks,
		Connected:     h.connected.Load(),
		Notifications: h.notifications.Load(),
		Reads:         h.reads.Load(),
		Pipelines:     h.pipelines.Load(),
		ReadErrors:    h.readErrors.Load(),
		Reconnects:    h.reconnects.Load(),
		CutOff:        h.cutOff.Load(),
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rateLimited lets one log line through every 10 seconds.
type rateLimited struct {
	mu   sync.Mutex
	last time.Time
}

func (r *rateLimited) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.last) >= 10*time.Second {
		r.last = now
		return true
	}
	return false
}
