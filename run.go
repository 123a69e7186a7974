package completion

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// run is the state of one call of Consumer.Run. The goroutines it starts:
//
//   - the reader (read.go), in Run's own goroutine: XREADGROUP, hands
//     entries to the workers;
//   - Concurrency workers (process.go): decode, look up, handle, then ack,
//     schedule a retry, or dead-letter;
//   - the acker (ack.go): batches acknowledgements into multi-id XACKs;
//   - the reclaimer (reclaim.go): XAUTOCLAIM of stale entries, the retry
//     timer, and removal of departed consumers;
//   - the leaser (lease.go): renews this consumer's claim on entries it
//     has held for a while, so that no one else takes them over.
type run struct {
	c   *Consumer
	cfg *Config // this run's: Stream is the partition's key
	log *slog.Logger

	state    atomic.Int32 // a State
	inFlight atomic.Int64 // len(tracked)

	stop     chan struct{} // closed when Run's context is done: stop reading
	stopOnce sync.Once
	fatalErr error // set before stop is closed by fail

	// ioCtx is for Redis calls that must finish during the drain (acks,
	// dead letters); it is cancelled when Run returns.
	ioCtx    context.Context
	ioCancel context.CancelFunc
	// handlerCtx is handed to handlers; cancelled when ShutdownTimeout runs
	// out.
	handlerCtx    context.Context
	handlerCancel context.CancelFunc
	// readCtx is for the reader's own calls (batch task lookups); cancelled
	// when the run stops.
	readCtx    context.Context
	readCancel context.CancelFunc

	queues  []chan *delivery
	seed    maphash.Seed
	workers sync.WaitGroup

	acks      chan *delivery
	ackerDone chan struct{}

	mu      sync.Mutex
	epoch   uint64               // bumped when the stream or group is recreated
	tracked map[string]*delivery // every entry this run holds, by id
	// While a read of the own pending list or an XAUTOCLAIM is under way
	// (guards > 0), acknowledged ids are remembered: such a read can return
	// an entry whose XACK landed after the read was sent, and that entry
	// must not be handled again.
	guards  int
	acked   map[string]struct{}
	retries retryQueue    // guarded by mu
	wake    chan struct{} // nudges the retry timer

	reader blockingReader

	// adopt: this run reads a partition this consumer has just taken
	// over; it first moves the group's pending entries there to itself
	// (see ownership.go).
	adopt bool
	// sem, when set, is shared by the runs of all partitions the consumer
	// owns: a worker holds a slot while it processes an entry, so that at
	// most Concurrency handlers run at once however many partitions it
	// owns.
	sem chan struct{}
	// cutMu guards handlerCancel against cut, which the partition
	// coordinator may call from any goroutine; cutOff is set by cut.
	cutMu  sync.Mutex
	cutOff atomic.Bool

	logMu   sync.Mutex
	lastLog map[string]time.Time
}

// delivery is one entry this consumer holds.
type delivery struct {
	id     string
	values map[string]any
	count  int64  // delivery count, this delivery included
	epoch  uint64 // run.epoch when read

	msg    Message
	badMsg error // decode failure; the entry will be dead-lettered
	reason string
	// bodyOversize: over MaxPayloadBytes or MaxEntryFields; its dead
	// letter holds an excerpt, not its fields.
	bodyOversize bool
	comp         Completion     // handed to the handler; here to save an allocation
	dl           *deadLetterReq // set when the acker is to dead-letter it

	// Set when a BatchTaskRegistry looked the task up for the whole read
	// batch; a redelivery looks it up again.
	prefetched bool
	task       Task
	taskErr    error

	touched  time.Time // when Redis last reset the entry's idle time
	retryAt  time.Time
	retryIdx int // index in the retry queue; notQueued, or claiming while redeliver claims it back
}

func newRun(c *Consumer, cfg Config) *run {
	log := c.log
	if cfg.Stream != c.cfg.Stream {
		log = log.With(slog.String("partition", cfg.Stream))
	}
	r := &run{
		c:         c,
		cfg:       &cfg,
		log:       log,
		stop:      make(chan struct{}),
		seed:      maphash.MakeSeed(),
		acks:      make(chan *delivery, cfg.BatchSize),
		ackerDone: make(chan struct{}),
		tracked:   make(map[string]*delivery),
		wake:      make(chan struct{}, 1),
	}
	r.reader = blockingReader{client: c.client, stream: cfg.Stream}
	r.setState(StateStarting)
	if cfg.OrderByTask {
		per := max(1, cfg.BatchSize/cfg.Concurrency)
		r.queues = make([]chan *delivery, cfg.Concurrency)
		for i := range r.queues {
			r.queues[i] = make(chan *delivery, per)
		}
	} else {
		r.queues = []chan *delivery{make(chan *delivery, cfg.Concurrency)}
	}
	return r
}

func (r *run) setState(s State) { r.state.Store(int32(s)) }

func (r *run) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// fail stops the run with a fatal error.
func (r *run) fail(err error) {
	r.stopOnce.Do(func() {
		r.fatalErr = err
		close(r.stop)
	})
}

func (r *run) run(ctx context.Context) error {
	base := context.WithoutCancel(ctx)
	r.ioCtx, r.ioCancel = context.WithCancel(base)
	defer r.ioCancel()
	r.cutMu.Lock()
	r.handlerCtx, r.handlerCancel = context.WithCancel(base)
	if r.cutOff.Load() {
		r.handlerCancel()
	}
	r.cutMu.Unlock()
	defer r.handlerCancel()
	r.readCtx, r.readCancel = context.WithCancel(base)
	defer r.readCancel()

	// Stop on cancellation, and end a blocked read at once.
	watchDone := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-ctx.Done():
			r.stopOnce.Do(func() { close(r.stop) })
		case <-r.stop:
		}
		r.setState(StateStopping)
		r.readCancel()
		r.interruptReader(readerDone)
	}()

	// Create the group; on a partition just taken over, first take what
	// the previous owner left pending.
	err := r.createGroup()
	if err == nil && r.adopt {
		err = r.adoptPending()
	}
	if err != nil {
		r.fail(err)
		close(readerDone)
		<-watchDone
		r.reader.close()
		if errors.Is(err, ErrRedisFatal) {
			return err
		}
		return nil // stopped before the group was ready
	}

	// Workers.
	for i := 0; i < r.cfg.Concurrency; i++ {
		q := r.queues[0]
		if r.cfg.OrderByTask {
			q = r.queues[i]
		}
		r.workers.Add(1)
		go r.worker(q)
	}
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); r.acker() }()
	leaseStop := make(chan struct{})
	bg.Add(1)
	go func() { defer bg.Done(); r.leaser(leaseStop) }()
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); r.reclaimer() }()
	go func() { defer loops.Done(); r.retryLoop() }()

	r.readLoop()
	close(readerDone)
	<-watchDone
	r.reader.close()
	loops.Wait()

	// Drain: queued entries are left pending; running handlers get
	// ShutdownTimeout to finish.
	r.setState(StateStopping)
	if !r.waitWorkers(r.cfg.ShutdownTimeout) {
		r.handlerCancel()
		if !r.waitWorkers(handlerGrace) {
			err = fmt.Errorf("%w: %d handler(s) still running %v after the shutdown began",
				ErrShutdownTimeout, r.inFlight.Load(), r.cfg.ShutdownTimeout+handlerGrace)
			r.log.Error("shutdown timed out: handlers ignore the cancellation of their context; their entries stay pending")
		}
	}
	close(leaseStop)
	close(r.ackerDone) // the acker flushes what it has, then returns
	bg.Wait()
	r.forgetAll()
	if err == nil && r.fatalErr == nil {
		r.removeSelf()
	}
	if r.fatalErr != nil {
		return r.fatalErr
	}
	return err
}

// handlerGrace is how long Run still waits for handlers after cancelling
// their context at the end of ShutdownTimeout.
const handlerGrace = 2 * time.Second

// cut cancels the handlers' context at once, from any goroutine, also
// before run has started: the partition's ownership is lost or about to
// expire, and another consumer may start on it. No handler is started after
// the cut, and entries whose handler fails after it are left pending for
// the next owner instead of being retried or dead-lettered here.
func (r *run) cut() {
	r.cutMu.Lock()
	defer r.cutMu.Unlock()
	r.cutOff.Store(true)
	if r.handlerCancel != nil {
		r.handlerCancel()
	}
}

func (r *run) waitWorkers(d time.Duration) bool {
	done := make(chan struct{})
	go func() { r.workers.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// interruptReader ends a blocked XREADGROUP with CLIENT UNBLOCK, repeating
// until the reader has returned (the read may not have been sent yet when
// the first UNBLOCK goes out).
func (r *run) interruptReader(readerDone <-chan struct{}) {
	ctx, cancel := context.WithTimeout(r.ioCtx, r.cfg.Block+time.Second)
	defer cancel()
	for {
		owner, id := r.reader.target()
		if err := unblock(ctx, owner, id); err != nil {
			r.log.Info("cannot interrupt the blocked read (CLIENT UNBLOCK refused); stopping once it times out", slog.Any("err", err), slog.Duration("block", r.cfg.Block))
			return
		}
		select {
		case <-readerDone:
			return
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Values of delivery.retryIdx outside the retry queue.
const (
	notQueued = -1 // held, not waiting for a retry
	claiming  = -2 // its retry is due: redeliver is claiming it back
)

// trackBatch registers the deliveries in ds as held by this run and
// returns those it accepted: not those already held (a reclaim or re-read of
// an entry still being worked on), nor those acknowledged since a re-read
// began (see run.acked). An entry waiting for its retry is delivered now
// instead when preempt is set (another consumer's XAUTOCLAIM would have
// taken it anyway).
func (r *run) trackBatch(ds []delivery, preempt bool) []*delivery {
	out := make([]*delivery, 0, len(ds))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range ds {
		d := &ds[i]
		if d.epoch != r.epoch {
			continue
		}
		if _, ok := r.acked[d.id]; ok {
			continue
		}
		if old, ok := r.tracked[d.id]; ok {
			if old.retryIdx < 0 || !preempt {
				// The read reset the entry's idle time and counted a
				// delivery: keep a copy waiting for its retry in step, or
				// the retry's XCLAIM MIN-IDLE would take it for someone
				// else's. (A copy a worker has is not touched: the worker
				// reads it without the lock, and leases keep its idle time.)
				if old.retryIdx != notQueued {
					old.touched, old.count = d.touched, max(old.count, d.count)
				}
				continue
			}
			// It was waiting for a retry: deliver it now instead.
			r.retries.remove(old)
		}
		d.retryIdx = notQueued
		r.tracked[d.id] = d
		out = append(out, d)
	}
	r.inFlight.Store(int64(len(r.tracked)))
	return out
}

// guard starts a read that may return entries acknowledged meanwhile (the
// own pending list, XAUTOCLAIM); unguard ends it.
func (r *run) guard() {
	r.mu.Lock()
	r.guards++
	if r.acked == nil {
		r.acked = make(map[string]struct{})
	}
	r.mu.Unlock()
}

func (r *run) unguard() {
	r.mu.Lock()
	if r.guards--; r.guards == 0 {
		clear(r.acked)
	}
	r.mu.Unlock()
}

// done drops acknowledged (or dead-lettered) deliveries from the held set,
// remembering their ids while a guarded read is under way.
func (r *run) done(ds ...*delivery) {
	r.mu.Lock()
	if r.guards > 0 {
		for _, d := range ds {
			r.acked[d.id] = struct{}{}
		}
	}
	r.mu.Unlock()
	r.forget(ds...)
}

// forget drops deliveries from the held set.
func (r *run) forget(ds ...*delivery) {
	r.mu.Lock()
	for _, d := range ds {
		if r.tracked[d.id] == d {
			if d.retryIdx >= 0 {
				r.retries.remove(d)
			}
			delete(r.tracked, d.id)
		}
	}
	r.inFlight.Store(int64(len(r.tracked)))
	r.mu.Unlock()
}

// newEpoch forgets everything held: the stream or the group was deleted
// and recreated, so the entries held are gone, and their ids may be reused
// by new entries (XADD restarts from the current time). Acks and dead
// letters of older deliveries are dropped from now on.
func (r *run) newEpoch() {
	r.mu.Lock()
	r.epoch++
	clear(r.tracked)
	clear(r.acked)
	for _, d := range r.retries {
		d.retryIdx = notQueued
	}
	r.retries = r.retries[:0]
	r.inFlight.Store(0)
	r.mu.Unlock()
}

// current reports whether d was read in the current epoch.
func (r *run) current(d *delivery) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return d.epoch == r.epoch
}

func (r *run) forgetAll() {
	r.mu.Lock()
	clear(r.tracked)
	r.retries = r.retries[:0]
	r.inFlight.Store(0)
	r.mu.Unlock()
}

// dispatch hands d, tracked already, to a worker. It blocks while the
// workers are busy, and returns false, leaving the entry pending, when the
// run stops first.
func (r *run) dispatch(d *delivery) bool {
	r.c.stats.delivered.Add(1)
	select {
	case r.queueFor(d) <- d:
		return true
	case <-r.stop:
		r.forget(d)
		return false
	}
}

// queueFor picks d's worker queue: the shared one, or under OrderByTask the
// one its task id hashes to.
func (r *run) queueFor(d *delivery) chan *delivery {
	if len(r.queues) == 1 {
		return r.queues[0]
	}
	key := d.msg.TaskID
	if d.badMsg != nil {
		key = d.id
	}
	return r.queues[maphash.String(r.seed, key)%uint64(len(r.queues))]
}

// redisError records err and logs it, at most once per errorLogEvery per
// call site key, so that an outage does not flood the log.
//
// A refusal retrying cannot fix (see isFatal) stops the run: Run returns it
// wrapped in ErrRedisFatal instead of retrying forever and hiding it.
func (r *run) redisError(op string, err error, attrs ...any) {
	r.c.noteRedisError(err)
	r.observe(Event{Kind: EventRedisError, Err: err})
	if isFatal(err) {
		r.log.Error("redis refused a command for good; stopping", slog.String("op", op), slog.Any("err", err))
		r.fail(fmt.Errorf("%w: %s on stream %q, group %q: %w", ErrRedisFatal, op, r.cfg.Stream, r.cfg.Group, err))
		return
	}
	if !r.allowLog(op) {
		return
	}
	r.log.Warn("redis call failed; will retry", append([]any{slog.String("op", op), slog.Any("err", err)}, attrs...)...)
}

// errorLogEvery is the most often one kind of Redis error is logged.
const errorLogEvery = 10 * time.Second

func (r *run) allowLog(key string) bool {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if r.lastLog == nil {
		r.lastLog = make(map[string]time.Time)
	}
	now := time.Now()
	if last, ok := r.lastLog[key]; ok && now.Sub(last) < errorLogEvery {
		return false
	}
	r.lastLog[key] = now
	return true
}
