package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamrelay/completion/internal/clock"
)

// State is an engine's state; the values are those of completion.State.
type State int32

// The states.
const (
	StateIdle State = iota
	StateStarting
	StateRunning
	StateDegraded
	StateStopping
)

// Settings are the timings and limits of an engine, from completion.Config
// with its defaults filled in (see there for what each means).
type Settings struct {
	Block, ClaimMinIdle, ClaimInterval, LeaseInterval, AckDelay        time.Duration
	ShutdownTimeout, ErrorBackoff, MaxErrorBackoff, StaleConsumerAge   time.Duration
	BatchSize, Concurrency, MaxPayloadBytes, MaxIDBytes, MaxErrorBytes int
	MaxReadAheadBytes, DeadLetterMaxLen                                int64
	OrderByTask                                                        bool
	// StartTimeout bounds how long Run tries to create the group before it
	// gives up; 0 means no bound.
	StartTimeout time.Duration
}

// Params are everything an engine is given.
type Params struct {
	Client                                    Client
	Stream, DeadLetterStream, Group, Consumer string
	Settings
	Processor Processor
	Stats     *Stats
	// Observe receives the engine's events; nil for none.
	Observe func(Event)
	Log     *slog.Logger
	Clock   clock.Clock
	// Adopt makes the engine first take over every entry the group has
	// pending in the stream, whoever holds it: a partition this consumer
	// has just come to own.
	Adopt bool
	// Sem, when set, holds the handler slots shared with other engines
	// (the partitions a consumer owns); otherwise the engine's workers
	// need none.
	Sem chan struct{}
	// Live names the consumers known to be alive; Heartbeat makes this
	// engine keep it (in MembersKey), for one unpartitioned stream. Those
	// are never removed from the group as departed.
	Live       *LiveSet
	Heartbeat  bool
	MembersKey string
	// The root package's sentinels, for the errors Run returns.
	ErrRedisFatal, ErrStartTimeout, ErrShutdownTimeout error
	// Signal, for tests, is called after each pass of a background job
	// ("reclaimer", "leaser", "janitor", "retrier"), and when a worker waits
	// for room in the acker ("acker-full"); nil in production.
	Signal func(job string)
}

// Engine consumes one stream: see the package documentation. Make one with
// New; Run it once.
type Engine struct {
	p      Params
	log    *slog.Logger
	source Source // p.Stream and p.Group, shared by the deliveries

	state    atomic.Int32 // a State
	stop     chan struct{}
	stopOnce sync.Once
	fatalErr error // set before stop is closed by fail

	// ioCtx is for Redis calls; cancelled when Run returns.
	ioCtx context.Context
	// handlerCtx is handed to the Processor; cancelled when ShutdownTimeout
	// runs out, or by Cut.
	handlerCtx    context.Context
	handlerCancel context.CancelFunc
	cutOff        atomic.Bool

	held  *held
	queue *queue
	rep   reporter
	jobs  tracker

	reader    *reader
	workers   []*worker
	acker     *acker
	retrier   *retrier
	reclaimer *reclaimer
	leaser    *leaser
	janitor   *janitor
}

// New returns an engine of p. It does not contact Redis.
func New(p Params) *Engine {
	if p.Clock == nil {
		p.Clock = clock.Real
	}
	if p.Live == nil {
		p.Live = &LiveSet{}
	}
	e := &Engine{p: p, log: p.Log, source: Source{Stream: p.Stream, Group: p.Group}, stop: make(chan struct{})}
	e.held = newHeld(e.reportDeleted)
	e.rep.e = e
	shards := 1
	if p.OrderByTask {
		shards = p.Concurrency
	}
	e.queue = newQueue(shards)
	e.handlerCtx, e.handlerCancel = context.WithCancel(context.Background())
	e.reader = &reader{e: e, blocking: blockingReader{client: p.Client, stream: p.Stream}, exited: make(chan struct{})}
	for i := range p.Concurrency {
		e.workers = append(e.workers, &worker{e: e, shard: i % shards})
	}
	e.acker = newAcker(e)
	e.retrier = &retrier{e: e, wake: make(chan struct{}, 1)}
	e.reclaimer = &reclaimer{e: e}
	e.leaser = &leaser{e: e, quit: make(chan struct{})}
	e.janitor = &janitor{e: e, quit: make(chan struct{}), done: make(chan struct{})}
	return e
}

// State returns the engine's state.
func (e *Engine) State() State { return State(e.state.Load()) }

// InFlight returns how many entries the engine holds.
func (e *Engine) InFlight() int64 { return e.held.count.Load() }

// Stream returns the stream the engine reads.
func (e *Engine) Stream() string { return e.p.Stream }

func (e *Engine) setState(s State) { e.state.Store(int32(s)) }

func (e *Engine) stopped() bool {
	select {
	case <-e.stop:
		return true
	default:
		return false
	}
}

// fail stops the engine with a fatal error.
func (e *Engine) fail(err error) {
	e.stopOnce.Do(func() {
		e.fatalErr = err
		close(e.stop)
	})
}

func (e *Engine) now() int64 { return e.p.Clock.Now().UnixNano() }

func (e *Engine) observe(ev Event) {
	if e.p.Observe != nil {
		e.p.Observe(ev)
	}
}

func (e *Engine) signal(job string) {
	if e.p.Signal != nil {
		e.p.Signal(job)
	}
}

// Cut cancels the handlers' context at once, from any goroutine, also
// before Run has started: the partition's ownership is lost or about to
// expire, and another consumer may start on it. No delivery is handed to
// the Processor after the cut, and entries whose handler fails after it are
// left pending for the next owner instead of being retried or
// dead-lettered here.
func (e *Engine) Cut() {
	e.cutOff.Store(true)
	e.handlerCancel()
}

// Timings of the stop. Run returns at most ShutdownTimeout + handlerGrace +
// stopIO after its context is cancelled, whatever Redis does.
const (
	// handlerGrace is how long Run still waits for handlers after
	// cancelling their context at the end of ShutdownTimeout.
	handlerGrace = 2 * time.Second
	// stopIO bounds the Redis calls of the stop after the handlers: the
	// last acknowledgements, leaving the group.
	stopIO = 5 * time.Second
)

// Run consumes until ctx is cancelled or Redis refuses the engine for good;
// see completion.Consumer.Run. It returns nil after a clean stop, or an
// error wrapping ErrRedisFatal, ErrStartTimeout or ErrShutdownTimeout.
func (e *Engine) Run(ctx context.Context) error {
	e.setState(StateStarting)
	var cancelIO context.CancelFunc
	e.ioCtx, cancelIO = context.WithCancel(context.WithoutCancel(ctx))
	defer cancelIO()
	defer e.handlerCancel()

	// Stop on cancellation.
	e.jobs.goJob("watch", func() {
		select {
		case <-ctx.Done():
			e.stopOnce.Do(func() { close(e.stop) })
		case <-e.stop:
		}
	})

	if err := e.reader.start(); err != nil {
		e.fail(err)
		e.jobs.wait(e.p.Clock, stopIO) // the watch above
		if errors.Is(err, errStopped) {
			return nil
		}
		return err
	}
	for _, w := range e.workers {
		e.jobs.goWorker(w.run)
	}
	e.jobs.goJob("acker", e.acker.run)
	e.jobs.goJob("leaser", e.leaser.run)
	e.jobs.goJob("janitor", e.janitor.run)
	e.jobs.goLoop("reader", e.reader.loop)
	e.jobs.goLoop("retrier", e.retrier.run)
	e.jobs.goLoop("reclaimer", e.reclaimer.run)

	<-e.stop
	return e.shutdown()
}

// shutdown stops the engine: reading stops at once (a blocked read is
// interrupted), queued entries stay pending, running handlers get
// ShutdownTimeout, what finished is acknowledged, and the engine leaves the
// group if it holds nothing. Redis calls that do not return in time are
// left to end by the client's own timeouts.
func (e *Engine) shutdown() error {
	e.setState(StateStopping)
	e.reader.interrupt()
	e.held.forget(e.queue.close()...)
	e.acker.release() // a worker that finished never waits for an acker stuck in a Redis call

	var err error
	if !e.jobs.waitWorkers(e.p.Clock, e.p.ShutdownTimeout) {
		e.handlerCancel()
		if !e.jobs.waitWorkers(e.p.Clock, handlerGrace) {
			err = fmt.Errorf("%w: %d handler(s) still running %v after the shutdown began",
				e.p.ErrShutdownTimeout, e.jobs.workersLeft(), e.p.ShutdownTimeout+handlerGrace)
			e.log.Error("shutdown timed out: handlers ignore the cancellation of their context; their entries stay pending")
		}
	}
	deadline := e.p.Clock.Now().Add(stopIO)
	e.leaser.stopNow()
	e.acker.finish(deadline) // sends what it holds, within the deadline
	e.janitor.finish(deadline, err == nil && e.fatalErr == nil)
	if stuck := e.jobs.waitUntil(e.p.Clock, deadline); len(stuck) > 0 {
		e.log.Warn("stopping with Redis calls still under way (Redis does not answer); they end with the client's own timeouts, and what they would have acknowledged stays pending",
			slog.Any("jobs", stuck))
	}
	e.held.forgetAll()
	if e.fatalErr != nil {
		return e.fatalErr
	}
	return err
}

// errStopped: the engine stopped before it was ready.
var errStopped = errors.New("stopped")

// tracker keeps count of the engine's goroutines, by job.
type tracker struct {
	mu      sync.Mutex
	running map[string]int
	workers sync.WaitGroup
	all     sync.WaitGroup
	changed chan struct{}
}

func (t *tracker) start(job string) {
	t.mu.Lock()
	if t.running == nil {
		t.running = map[string]int{}
		t.changed = make(chan struct{}, 1)
	}
	t.running[job]++
	t.mu.Unlock()
	t.all.Add(1)
}

func (t *tracker) end(job string) {
	t.mu.Lock()
	if t.running[job]--; t.running[job] == 0 {
		delete(t.running, job)
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
	t.all.Done()
}

// goJob runs a background job.
func (t *tracker) goJob(job string, f func()) {
	t.start(job)
	go func() { defer t.end(job); f() }()
}

// goLoop runs a job that stops when the engine stops (the reader, the
// retrier, the reclaimer).
func (t *tracker) goLoop(job string, f func()) { t.goJob(job, f) }

// goWorker runs a worker.
func (t *tracker) goWorker(f func()) {
	t.workers.Add(1)
	t.goJob("worker", func() { defer t.workers.Done(); f() })
}

// waitWorkers waits up to d for every worker to return.
func (t *tracker) waitWorkers(c clock.Clock, d time.Duration) bool {
	done := make(chan struct{})
	go func() { t.workers.Wait(); close(done) }()
	timer := c.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C():
		return false
	}
}

func (t *tracker) workersLeft() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.running["worker"]
}

// wait waits up to d for every goroutine.
func (t *tracker) wait(c clock.Clock, d time.Duration) {
	t.waitUntil(c, c.Now().Add(d))
}

// waitUntil waits until deadline for every goroutine, and returns the jobs
// still running then.
func (t *tracker) waitUntil(c clock.Clock, deadline time.Time) []string {
	done := make(chan struct{})
	go func() { t.all.Wait(); close(done) }()
	timer := c.NewTimer(deadline.Sub(c.Now()))
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var stuck []string
	for job, n := range t.running {
		stuck = append(stuck, fmt.Sprintf("%s×%d", job, n))
	}
	return stuck
}

// LiveSet names the consumers of a group known to be alive.
type LiveSet struct{ names atomic.Pointer[[]string] }

// Set replaces the names.
func (l *LiveSet) Set(names []string) { l.names.Store(&names) }

// Names returns the names, nil when unknown.
func (l *LiveSet) Names() []string {
	if l == nil {
		return nil
	}
	if p := l.names.Load(); p != nil {
		return *p
	}
	return nil
}
