package completion

// The child consumer process of the fault suite, configured by a childSpec:
// what it connects to (one address, or Sentinel), how its Consumer is
// configured, and what it records. It records into a ledger file of its
// own, one line per event appended with O_APPEND (a write survives SIGKILL
// and SIGSTOP of the process, and does not depend on the Redis under test):
//
//	S <op id> <entry id> <deliveries>   a handler call started
//	H <op id> <entry id>                a handler call returned nil
//	L <entry id>                        Observer: EventLeaseLost
//	R <entry id>                        Observer: EventReclaimed
//	D <op id> <entry id>                Observer: EventDuplicate
//	X <entry id> <reason>               Observer: EventDeadLettered
//
// It stops when its stdin closes or on SIGTERM, and then prints
//
//	CHILD-RUN-RETURNED after=<ns since the stop was asked> err=<Run's error>
//	CHILD-STATS <Stats as JSON>
//	CHILD-PEAK-HEAP <bytes>             the peak HeapInuse (with childSpec.HeapSample)

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/require"
)

// childEnvSpec carries a child's childSpec as JSON.
const childEnvSpec = "COMPLETION_FAULT_SPEC"

// childSpec configures a child consumer process. Zero fields keep
// faultConfig's values (and go-redis's client defaults).
type childSpec struct {
	Addr          string   `json:"addr,omitempty"`
	SentinelAddrs []string `json:"sentinel_addrs,omitempty"` // with MasterName: redis.NewFailoverClient
	MasterName    string   `json:"master_name,omitempty"`
	Stream        string   `json:"stream"`
	Consumer      string   `json:"consumer"`
	// HandledKey, when set, is a Redis list the handler RPUSHes
	// "<op id> <entry id>" to before it returns nil (a handler that talks
	// to Redis). LedgerFile is the ledger file (see above).
	HandledKey string `json:"handled_key,omitempty"`
	LedgerFile string `json:"ledger_file,omitempty"`
	// The handler sleeps between SleepMin and SleepMax (honouring its
	// context). FailFirst makes it fail the first delivery of the
	// operations failsFirstCall names.
	SleepMin  time.Duration `json:"sleep_min,omitempty"`
	SleepMax  time.Duration `json:"sleep_max,omitempty"`
	FailFirst bool          `json:"fail_first,omitempty"`

	// Config fields.
	Concurrency       int           `json:"concurrency,omitempty"`
	BatchSize         int           `json:"batch_size,omitempty"`
	Block             time.Duration `json:"block,omitempty"`
	ClaimMinIdle      time.Duration `json:"claim_min_idle,omitempty"`
	ClaimInterval     time.Duration `json:"claim_interval,omitempty"`
	LeaseInterval     time.Duration `json:"lease_interval,omitempty"`
	ShutdownTimeout   time.Duration `json:"shutdown_timeout,omitempty"`
	StaleConsumerAge  time.Duration `json:"stale_consumer_age,omitempty"`
	DedupTTL          time.Duration `json:"dedup_ttl,omitempty"`
	MaxReadAheadBytes int64         `json:"max_read_ahead_bytes,omitempty"`
	MaxPayloadBytes   int           `json:"max_payload_bytes,omitempty"`
	// HeapSample makes the child sample its Go heap (HeapInuse) every
	// 10 ms and print the peak when it stops (CHILD-PEAK-HEAP).
	HeapSample bool `json:"heap_sample,omitempty"`
	// Client options.
	DialTimeout  time.Duration `json:"dial_timeout,omitempty"`
	ReadTimeout  time.Duration `json:"read_timeout,omitempty"`
	WriteTimeout time.Duration `json:"write_timeout,omitempty"`
}

// config is the child's consumer Config.
func (s childSpec) config(logger *slog.Logger) Config {
	cfg := faultConfig(s.Stream, s.Consumer, logger)
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	if s.Concurrency > 0 {
		cfg.Concurrency = s.Concurrency
	}
	if s.BatchSize > 0 {
		cfg.BatchSize = s.BatchSize
	}
	set(&cfg.Block, s.Block)
	set(&cfg.ClaimMinIdle, s.ClaimMinIdle)
	set(&cfg.ClaimInterval, s.ClaimInterval)
	set(&cfg.LeaseInterval, s.LeaseInterval)
	set(&cfg.ShutdownTimeout, s.ShutdownTimeout)
	set(&cfg.StaleConsumerAge, s.StaleConsumerAge)
	set(&cfg.DedupTTL, s.DedupTTL)
	if s.MaxReadAheadBytes > 0 {
		cfg.MaxReadAheadBytes = s.MaxReadAheadBytes
	}
	if s.MaxPayloadBytes > 0 {
		cfg.MaxPayloadBytes = s.MaxPayloadBytes
	}
	return cfg
}

// client is the child's Redis client.
func (s childSpec) client() *redis.Client {
	dial := s.DialTimeout
	if dial == 0 {
		dial = 2 * time.Second
	}
	if len(s.SentinelAddrs) > 0 {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs,
			DialTimeout: dial, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
		})
	}
	return redis.NewClient(&redis.Options{
		Addr: s.Addr, DialTimeout: dial, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// childLegacySpec reads the environment of TestFaultConsumerSigkill's
// children into a spec.
func childLegacySpec() childSpec {
	lo, hi := parseSleep(os.Getenv(childEnvSleep))
	s := childSpec{
		Addr: os.Getenv(childEnvAddr), Stream: os.Getenv(childEnvStream), Consumer: os.Getenv(childEnvConsumer),
		HandledKey: os.Getenv(childEnvHandled), SleepMin: lo, SleepMax: hi, FailFirst: true,
	}
	if v, err := strconv.Atoi(os.Getenv(childEnvConcurrency)); err == nil && v > 0 {
		s.Concurrency = v
	}
	if v, err := strconv.Atoi(os.Getenv(childEnvMinIdle)); err == nil && v > 0 {
		s.ClaimMinIdle = time.Duration(v) * time.Millisecond
	}
	return s
}

// runSpecChild is the body of the child process: it runs the consumer of
// spec until stdin closes or SIGTERM arrives.
func runSpecChild(t *testing.T, spec childSpec) {
	require.NotEmpty(t, spec.Stream)
	require.NotEmpty(t, spec.Consumer)
	require.True(t, spec.Addr != "" || len(spec.SentinelAddrs) > 0, "no Redis address")
	rdb := spec.client()
	t.Cleanup(func() { _ = rdb.Close() })

	var ledger io.Writer = io.Discard
	if spec.LedgerFile != "" {
		f, err := os.OpenFile(spec.LedgerFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		ledger = f
	}
	record := func(format string, args ...any) {
		_, _ = io.WriteString(ledger, fmt.Sprintf(format, args...)+"\n") // one write(2) per line
	}
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		record("S %s %s %d", c.Message.OperationID, c.EntryID, c.Deliveries)
		if spec.FailFirst && c.Deliveries == 1 && failsFirstCall(c.Message.OperationID) {
			return errors.New("transient failure of the first delivery")
		}
		if spec.SleepMax > 0 {
			select {
			case <-time.After(randBetween(spec.SleepMin, spec.SleepMax)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if spec.HandledKey != "" {
			if err := rdb.RPush(ctx, spec.HandledKey, c.Message.OperationID+" "+c.EntryID).Err(); err != nil {
				return err
			}
		}
		record("H %s %s", c.Message.OperationID, c.EntryID)
		return nil
	})
	cfg := spec.config(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	cfg.Observer = ObserverFunc(func(e Event) {
		switch e.Kind {
		case EventLeaseLost:
			record("L %s", e.EntryID)
		case EventReclaimed:
			record("R %s", e.EntryID)
		case EventDuplicate:
			record("D %s %s", e.OperationID, e.EntryID)
		case EventDeadLettered:
			record("X %s %s", e.EntryID, e.Reason)
		}
	})
	c, err := NewConsumer(rdb, anyTaskRegistry, h, cfg)
	require.NoError(t, err)

	// Stop when stdin closes (the parent asks, or died) or on SIGTERM.
	ctx, cancel := context.WithCancel(context.Background())
	var stopMu sync.Mutex
	var stopAt time.Time
	stopNow := func() {
		stopMu.Lock()
		if stopAt.IsZero() {
			stopAt = time.Now()
		}
		stopMu.Unlock()
		cancel()
	}
	// Stdin in non-blocking mode, so that closing it ends the reading
	// goroutine after a stop by SIGTERM (nothing of this package may be
	// left running: redistest.Main checks).
	stdin := os.Stdin
	if syscall.SetNonblock(syscall.Stdin, true) == nil { // not os.Stdin.Fd(), which makes it blocking again
		stdin = os.NewFile(uintptr(syscall.Stdin), "stdin")
	}
	stdinDone := make(chan struct{})
	go func() { defer close(stdinDone); _, _ = io.Copy(io.Discard, stdin); stopNow() }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			stopNow()
		case <-ctx.Done():
		}
	}()

	var peakHeap atomic.Uint64
	if spec.HeapSample {
		go func() {
			var ms runtime.MemStats
			for ctx.Err() == nil {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peakHeap.Load() {
					peakHeap.Store(ms.HeapInuse)
				}
				faultHold(10 * time.Millisecond)
			}
		}()
	}
	fmt.Printf("child consumer %s running (pid %d)\n", spec.Consumer, os.Getpid())
	err = c.Run(ctx)
	stopMu.Lock()
	after := time.Since(stopAt)
	stopMu.Unlock()
	cancel()
	_ = stdin.Close()
	select {
	case <-stdinDone:
	case <-time.After(time.Second):
	}
	st, _ := json.Marshal(c.Stats())
	fmt.Printf("CHILD-RUN-RETURNED after=%d err=%v\nCHILD-STATS %s\nCHILD-PEAK-HEAP %d\n", after.Nanoseconds(), err, st, peakHeap.Load())
	require.NoError(t, err)
}

// startSpecChild starts a child consumer process running spec, with a
// ledger file of its own when spec.LedgerFile is empty. It is SIGKILLed,
// if still running, in t.Cleanup.
func startSpecChild(t *testing.T, spec childSpec) *childProc {
	t.Helper()
	if spec.LedgerFile == "" {
		f, err := os.CreateTemp(t.TempDir(), "ledger-"+spec.Consumer+"-*")
		require.NoError(t, err)
		spec.LedgerFile = f.Name()
		_ = f.Close()
	}
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	c := startChildTest(t, "TestFaultConsumerProcess", map[string]string{childEnvSpec: string(b), childEnvConsumer: spec.Consumer})
	c.ledger = &ledgerFile{path: spec.LedgerFile, consumer: spec.Consumer}
	return c
}

// childRun is what a child printed when Run returned.
type childRun struct {
	returned bool
	after    time.Duration // from the stop being asked until Run returned
	err      string        // "<nil>" for none
	stats    Stats
	peakHeap int64 // the peak HeapInuse, with childSpec.HeapSample
}

// runResult parses the child's CHILD-RUN-RETURNED and CHILD-STATS lines.
func (c *childProc) runResult() childRun {
	var r childRun
	for _, l := range strings.Split(c.output(), "\n") {
		if rest, ok := strings.CutPrefix(l, "CHILD-RUN-RETURNED after="); ok {
			ns, errText, _ := strings.Cut(rest, " err=")
			n, _ := strconv.ParseInt(ns, 10, 64)
			r.returned, r.after, r.err = true, time.Duration(n), errText
		}
		if rest, ok := strings.CutPrefix(l, "CHILD-STATS "); ok {
			_ = json.Unmarshal([]byte(rest), &r.stats)
		}
		if rest, ok := strings.CutPrefix(l, "CHILD-PEAK-HEAP "); ok {
			r.peakHeap, _ = strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		}
	}
	return r
}

// ledgerFile reads a child's ledger file incrementally.
type ledgerFile struct {
	path     string
	consumer string
	off      int64

	mu        sync.Mutex
	lost      map[string]int // entry id -> EventLeaseLost count
	reclaimed map[string]int // entry id -> EventReclaimed count
	started   map[string]int // "op entry" -> handler starts
	done      map[string]int // "op entry" -> handler successes
	dups      int            // EventDuplicate
	dead      map[string]string
}

// sync applies what the child wrote since the last call to led: handler
// starts as calls, successes as handled. Other events are kept on f.
func (f *ledgerFile) sync(led *faultLedger) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost == nil {
		f.lost, f.reclaimed, f.started, f.done, f.dead = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}, map[string]string{}
	}
	file, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := file.Seek(f.off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReader(file)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil // EOF, or a line still being written: read it next time
		}
		f.off += int64(len(line))
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "S":
			if len(fields) >= 3 {
				led.called(fields[1])
				led.traceText(fields[1], fmt.Sprintf("%s start deliveries=%s entry=%s", f.consumer, strings.Join(fields[3:], ""), fields[2]))
				f.started[fields[1]+" "+fields[2]]++
			}
		case "H":
			if len(fields) >= 3 {
				led.handled(fields[1], fields[2])
				f.done[fields[1]+" "+fields[2]]++
			}
		case "L":
			f.lost[fields[1]]++
		case "R":
			f.reclaimed[fields[1]]++
		case "D":
			f.dups++
		case "X":
			if len(fields) >= 3 {
				f.dead[fields[1]] = fields[2]
			}
		}
	}
}

// snapshot returns copies of the handler starts and successes read so far.
func (f *ledgerFile) snapshot() (started, done map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	started, done = map[string]int{}, map[string]int{}
	for k, v := range f.started {
		started[k] = v
	}
	for k, v := range f.done {
		done[k] = v
	}
	return started, done
}

// lostIDs returns the entry ids the child reported as leases lost, with
// how often each was reported.
func (f *ledgerFile) lostIDs() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.lost {
		out[k] = v
	}
	return out
}

// childLedgers syncs the ledger files of several children (also of
// children that have exited) into one ledger.
type childLedgers struct {
	mu    sync.Mutex
	files []*ledgerFile
}

func (c *childLedgers) add(p *childProc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files = append(c.files, p.ledger)
}

func (c *childLedgers) sync(t testing.TB, led *faultLedger) {
	c.mu.Lock()
	files := append([]*ledgerFile(nil), c.files...)
	c.mu.Unlock()
	for _, f := range files {
		if err := f.sync(led); err != nil {
			t.Logf("read ledger file %s: %v", filepath.Base(f.path), err)
		}
	}
}
