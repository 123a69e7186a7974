package completion

// Helpers of the fault-injection suite (faults_test.go): the ledger of
// published operations, a publisher that retries, the child consumer
// process, and the FAULTS report line.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/require"
)

// faultSoakEnv scales the fault scenarios: unset, empty or "0" is the
// default (CI) size; "1", "true" or "yes" is the soak size (faultSoakScale,
// over 100k messages in all); a number N >= 2 multiplies the default sizes
// by N.
const faultSoakEnv = "COMPLETION_SOAK"

// faultSoakScale is the scale COMPLETION_SOAK=1 means.
const faultSoakScale = 20

// faultScale returns the size factor of the fault scenarios.
func faultScale(t testing.TB) int {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(faultSoakEnv))
	switch strings.ToLower(v) {
	case "", "0", "false", "no":
		return 1
	case "1", "true", "yes":
		return faultSoakScale
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want 1 (soak) or a scale factor >= 2", faultSoakEnv, v)
	}
	return n
}

// faultCount scales a number of fault injections: more in a soak run, but
// far fewer than the messages (sqrt of the scale).
func faultCount(base, scale int) int {
	return base * max(1, int(math.Round(math.Sqrt(float64(scale)))))
}

// faultWait is how long a scenario waits for every published id to reach its
// outcome: generous, since CI runs with -race on 2 cores.
func faultWait(n int) time.Duration {
	return 90*time.Second + time.Duration(n)*5*time.Millisecond
}

// faultClient returns a go-redis client to addr, closed in t.Cleanup, with
// maintenance notifications off (as redistest's Client) and the given
// changes applied.
func faultClient(t testing.TB, addr string, tweak func(*redis.Options)) *redis.Client {
	t.Helper()
	o := &redis.Options{
		Addr:                     addr,
		DialTimeout:              2 * time.Second,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if tweak != nil {
		tweak(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// faultConfig is the consumer configuration of the fault scenarios: short
// timings, and MaxDeliveries high enough that faults alone (each reclaim
// counts a delivery) never dead-letter a healthy completion.
func faultConfig(stream, name string, logger *slog.Logger) Config {
	return Config{
		Stream:          stream,
		Group:           "g",
		Consumer:        name,
		Block:           500 * time.Millisecond,
		BatchSize:       50,
		Concurrency:     8,
		ClaimMinIdle:    2 * time.Second,
		ClaimInterval:   200 * time.Millisecond,
		MaxDeliveries:   50,
		RetryBackoff:    20 * time.Millisecond,
		MaxRetryBackoff: 200 * time.Millisecond,
		ErrorBackoff:    20 * time.Millisecond,
		MaxErrorBackoff: 300 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
		Logger:          logger,
	}
}

// anyTaskRegistry knows every task: it returns a valid task for any ids.
var anyTaskRegistry = TaskRegistryFunc(func(_ context.Context, op, task string) (Task, error) {
	return Task{TaskID: task, SessionID: "s-" + task, ToolCallID: "tc", OperationID: op, Status: "running"}, nil
})

// faultMessage is the i-th completion of a scenario: successes with an
// object or a string result, and failures with an error text.
func faultMessage(prefix string, i int) Message {
	m := Message{OperationID: fmt.Sprintf("%s-%d", prefix, i), TaskID: fmt.Sprintf("t-%d", i%97)}
	switch i % 3 {
	case 0:
		m.Success, m.Result = true, []byte(`{"n":`+strconv.Itoa(i)+`,"text":"<&>"}`)
	case 1:
		m.Success, m.Result = true, StringResult("done "+strconv.Itoa(i))
	default:
		m.Error = "failed " + strconv.Itoa(i)
	}
	return m
}

// ---------------------------------------------------------------------------
// Ledger

// Outcomes a ledger entry wants. A dead-letter outcome is its dl_reason.
const outcomeHandled = ""

// ledgerRec is one published id: an operation published with Publish, or a
// raw entry (poison) keyed "raw:<entry id>".
type ledgerRec struct {
	key     string
	entryID string // the id Publish (or XADD) returned
	want    string // outcomeHandled or a dead-letter reason
	epoch   int    // stream-deleted: deletions done before the publish
	seq     int    // publish order
}

// faultLedger records every published id, every successful handler call and
// every handler call, safely from many goroutines. Handler calls may be
// recorded before the publish that caused them (the consumer is fast).
type faultLedger struct {
	mu      sync.Mutex
	recs    map[string]*ledgerRec
	order   []*ledgerRec
	success map[string]int      // key + "|" + entry id -> successful handler calls
	byKey   map[string]int      // key -> successful handler calls, over all entries
	calls   map[string]int      // key -> handler calls (successful or not)
	traces  map[string][]string // key -> "consumer@time deliveries=n entry=id" per call, for duplicates
	ghosts  int                 // publishes retried after an error (may have been added twice)
}

func newFaultLedger() *faultLedger {
	return &faultLedger{
		recs:    make(map[string]*ledgerRec),
		success: make(map[string]int),
		byKey:   make(map[string]int),
		calls:   make(map[string]int),
		traces:  make(map[string][]string),
	}
}

// published records a publish that returned an id.
func (l *faultLedger) published(key, entryID, want string, epoch int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.recs[key]; dup {
		panic("ledger: key published twice: " + key)
	}
	r := &ledgerRec{key: key, entryID: entryID, want: want, epoch: epoch, seq: len(l.order)}
	l.recs[key] = r
	l.order = append(l.order, r)
}

// called records a handler call for key.
func (l *faultLedger) called(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[key]++
	return l.calls[key]
}

// trace records who was called for key, when, and with which delivery
// count, to explain duplicates.
func (l *faultLedger) trace(key, consumer string, c *Completion) {
	s := fmt.Sprintf("%s@%s deliveries=%d entry=%s", consumer, time.Now().Format("15:04:05.000"), c.Deliveries, c.EntryID)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.traces[key] = append(l.traces[key], s)
}

// traceText records a line about key, to explain duplicates.
func (l *faultLedger) traceText(key, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.traces[key] = append(l.traces[key], s)
}

// handled records a handler call for key that returned nil.
func (l *faultLedger) handled(key, entryID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.success[key+"|"+entryID]++
	l.byKey[key]++
}

func (l *faultLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order)
}

func (l *faultLedger) handledCount(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byKey[key]
}

func (l *faultLedger) callCount(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[key]
}

func (l *faultLedger) records() []*ledgerRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*ledgerRec(nil), l.order...)
}

// unhandled returns how many ids that want to be handled have not been yet.
func (l *faultLedger) unhandled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.order {
		if r.want == outcomeHandled && l.byKey[r.key] == 0 {
			n++
		}
	}
	return n
}

// handledListReader merges the handled records a child consumer process
// pushes to a Redis list ("<op id> <entry id>" per successful handler call)
// into the ledger, reading only what is new since the last call.
type handledListReader struct {
	key  string
	next int64
}

func (h *handledListReader) sync(ctx context.Context, rdb *redis.Client, l *faultLedger) error {
	for {
		items, err := rdb.LRange(ctx, h.key, h.next, h.next+999).Result()
		if err != nil {
			return err
		}
		for _, it := range items {
			op, entry, _ := strings.Cut(it, " ")
			l.handled(op, entry)
		}
		h.next += int64(len(items))
		if len(items) < 1000 {
			return nil
		}
	}
}

// deadLetterRec is one entry of the dead-letter stream, as the ledger sees it.
type deadLetterRec struct {
	sourceID string
	reason   string
	opID     string // from the data field, when it decodes
	count    string // dl_deliveries
}

// readDeadLetters returns the whole dead-letter stream, page by page.
func readDeadLetters(ctx context.Context, rdb *redis.Client, stream string) ([]deadLetterRec, error) {
	var out []deadLetterRec
	start := "-"
	for {
		msgs, err := rdb.XRangeN(ctx, stream, start, "+", 1000).Result()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			d := deadLetterRec{}
			d.sourceID, _ = m.Values[DeadLetterIDField].(string)
			d.reason, _ = m.Values[DeadLetterReasonField].(string)
			d.count, _ = m.Values[DeadLetterDeliveriesField].(string)
			if s, ok := m.Values[DataField].(string); ok {
				var msg Message
				if decodeMessage([]byte(s), &msg) == nil {
					d.opID = msg.OperationID
				}
			}
			out = append(out, d)
		}
		if len(msgs) < 1000 {
			return out, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// faultResult is what a scenario's ledger check found.
type faultResult struct {
	scenario     string
	published    int
	handled      int // ids handled at least once
	deadLettered int // ids dead-lettered (with any reason)
	lost         int // ids without their intended outcome and not excused
	duplicates   int // successful handler calls beyond the first per entry, and extra dead letters
	faults       int
	excused      int            // ids whose loss the scenario attributes to the operator (see excuse)
	excusedWhy   map[string]int // excuse -> count
	wrong        []string       // the first lost ids, explained
	dups         []string       // the first duplicated entries, explained
}

// line is the one FAULTS line the scenario prints.
func (r faultResult) line() string {
	return fmt.Sprintf("FAULTS scenario=%s published=%d handled=%d deadlettered=%d lost=%d duplicates=%d faults=%d excused=%d",
		r.scenario, r.published, r.handled, r.deadLettered, r.lost, r.duplicates, r.faults, r.excused)
}

// evaluate checks every published id against its intended outcome:
//
//   - want handled: at least one successful handler call for the operation;
//   - want a dead-letter reason: a dead letter of this id with that reason,
//     and no successful handler call.
//
// An id without its outcome is lost, unless excuse (may be nil) names why
// its loss is expected (e.g. the operator deleted the stream); it is called
// with the ledger locked, with the id's handler call count. Duplicates
// are successful handler calls beyond the first for the same entry (an
// operation published twice, after a lost publish reply, is two entries
// and not a duplicate), plus dead letters beyond the first for one entry,
// plus entries both handled and dead-lettered.
func (l *faultLedger) evaluate(scenario string, dls []deadLetterRec, excuse func(r *ledgerRec, handled bool, calls int) string) faultResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	res := faultResult{scenario: scenario, published: len(l.order), excusedWhy: map[string]int{}}

	// Dead letters by ledger key: by operation id when the data decodes to
	// a published operation, else by source entry id.
	byEntry := make(map[string]string, len(l.order))
	for _, r := range l.order {
		byEntry[r.entryID] = r.key
	}
	dlByKey := map[string][]deadLetterRec{}
	for _, d := range dls {
		key := ""
		if r, ok := l.recs[d.opID]; ok && d.opID != "" && r.entryID == d.sourceID {
			key = d.opID
		} else if k, ok := byEntry[d.sourceID]; ok {
			key = k
		} else if _, ok := l.recs[d.opID]; ok {
			key = d.opID // a second entry of the operation (lost publish reply)
		} else {
			key = "unknown:" + d.sourceID
			res.wrong = appendWrong(res.wrong, fmt.Sprintf("dead letter of an entry nobody published: source %s reason %s op %q", d.sourceID, d.reason, d.opID))
		}
		dlByKey[key] = append(dlByKey[key], d)
	}

	for pair, n := range l.success {
		if n > 1 {
			res.duplicates += n - 1
			key, entry, _ := strings.Cut(pair, "|")
			res.dups = appendWrong(res.dups, fmt.Sprintf("%s (entry %s): handled %d times, %d handler calls %v", key, entry, n, l.calls[key], l.traces[key]))
		}
	}
	for key, ds := range dlByKey {
		perEntry := map[string]int{}
		for _, d := range ds {
			perEntry[d.sourceID]++
		}
		for _, n := range perEntry {
			res.duplicates += n - 1
		}
		if l.byKey[key] > 0 {
			res.duplicates++
		}
	}

	for _, r := range l.order {
		handled := l.byKey[r.key] > 0
		ds := dlByKey[r.key]
		if handled {
			res.handled++
		}
		if len(ds) > 0 {
			res.deadLettered++
		}
		ok := false
		switch {
		case r.want == outcomeHandled:
			ok = handled
		default:
			ok = !handled && len(ds) > 0
			for _, d := range ds {
				ok = ok && d.reason == r.want
			}
		}
		if ok {
			continue
		}
		if excuse != nil {
			if why := excuse(r, handled, l.calls[r.key]); why != "" {
				res.excused++
				res.excusedWhy[why]++
				continue
			}
		}
		res.lost++
		var reasons []string
		for _, d := range ds {
			reasons = append(reasons, d.reason)
		}
		want := r.want
		if want == outcomeHandled {
			want = "handled"
		}
		res.wrong = appendWrong(res.wrong, fmt.Sprintf("%s (entry %s, epoch %d): want %s; handled %d times, %d handler calls, dead letters %v",
			r.key, r.entryID, r.epoch, want, l.byKey[r.key], l.calls[r.key], reasons))
	}
	return res
}

func appendWrong(w []string, s string) []string {
	if len(w) < 20 {
		w = append(w, s)
	}
	return w
}

// report prints the scenario's FAULTS line, to the test log and to stdout,
// with the details of what was lost.
func (r faultResult) report(t testing.TB) {
	t.Helper()
	line := r.line()
	t.Log(line)
	fmt.Println(line)
	if len(r.excusedWhy) > 0 {
		t.Logf("excused: %v", r.excusedWhy)
	}
	for _, w := range r.wrong {
		t.Logf("not as intended: %s", w)
	}
	for _, d := range r.dups {
		t.Logf("duplicate: %s", d)
	}
}

// ---------------------------------------------------------------------------
// Publishing

// faultPublisher publishes the scenario's completions in order, at a steady
// rate, and retries a publish until Publish returns an id: only then does
// the ledger count it as published. A retried publish may have been added
// by its failed attempt as well (the reply was lost); such an extra entry
// carries the same operation id, so it is not in the ledger on its own.
type faultPublisher struct {
	rdb    *redis.Client
	stream string
	led    *faultLedger
	opts   []PublishOption
	prefix string

	done     atomic.Int64 // successful publishes
	failures atomic.Int64 // failed attempts
	retried  atomic.Int64 // publishes that needed more than one attempt
}

// publish publishes message i, retrying until it succeeds or ctx ends. It
// reports false when ctx ended first.
func (p *faultPublisher) publish(ctx context.Context, i int, epoch int) bool {
	msg := faultMessage(p.prefix, i)
	for attempt := 1; ; attempt++ {
		id, err := Publish(ctx, p.rdb, p.stream, msg, p.opts...)
		if err == nil {
			p.led.published(msg.OperationID, id, outcomeHandled, epoch)
			p.done.Add(1)
			if attempt > 1 {
				p.retried.Add(1)
			}
			return true
		}
		p.failures.Add(1)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pace sleeps until message i is due at rate msgs/s since start. It
// reports false when ctx ended.
func pace(ctx context.Context, start time.Time, i int, rate float64) bool {
	due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// run publishes messages 0..n-1 at rate msgs/s in a goroutine and returns a
// channel closed when it is done. It stops early when ctx ends.
func (p *faultPublisher) run(ctx context.Context, n int, rate float64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for i := 0; i < n; i++ {
			if !pace(ctx, start, i, rate) || !p.publish(ctx, i, 0) {
				return
			}
		}
	}()
	return done
}

// waitProgress waits until cond holds or d passes, polling. It reports
// whether cond held.
func waitProgress(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		faultHold(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Logs

// ringLog keeps the last lines a consumer logged, to show when a scenario
// fails. It is an io.Writer for slog.
type ringLog struct {
	mu    sync.Mutex
	lines []string
	next  int
	total int
}

const ringLogLines = 80

func (r *ringLog) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if len(l) > 400 {
			l = l[:400] + "..."
		}
		if len(r.lines) < ringLogLines {
			r.lines = append(r.lines, l)
		} else {
			r.lines[r.next] = l
			r.next = (r.next + 1) % ringLogLines
		}
		r.total++
	}
	return len(p), nil
}

func (r *ringLog) tail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
	return strings.Join(out, "\n")
}

// faultLogger returns a logger for a consumer of the scenario: info and
// above into a ring shown if the test fails (and to stderr when
// COMPLETION_TEST_LOG is set).
func faultLogger(t testing.TB, name string) *slog.Logger {
	t.Helper()
	if os.Getenv("COMPLETION_TEST_LOG") != "" {
		return quietLogger().With(slog.String("test", t.Name()))
	}
	ring := &ringLog{}
	t.Cleanup(func() {
		if t.Failed() && ring.total > 0 {
			t.Logf("last log lines of consumer %s (%d lines in all):\n%s", name, ring.total, tailText(ring.tail(), 30))
		}
	})
	return slog.New(slog.NewTextHandler(ring, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// ---------------------------------------------------------------------------
// Child consumer processes

// Environment of a child consumer process (TestFaultConsumerProcess).
const (
	childEnv            = "COMPLETION_FAULT_CHILD" // "1" in the child
	childEnvAddr        = "COMPLETION_FAULT_ADDR"
	childEnvStream      = "COMPLETION_FAULT_STREAM"
	childEnvConsumer    = "COMPLETION_FAULT_CONSUMER"
	childEnvHandled     = "COMPLETION_FAULT_HANDLED_KEY"
	childEnvSleep       = "COMPLETION_FAULT_SLEEP_MS" // "min-max" handler sleep
	childEnvConcurrency = "COMPLETION_FAULT_CONCURRENCY"
	childEnvMinIdle     = "COMPLETION_FAULT_CLAIM_MIN_IDLE_MS"
)

// childProc is a consumer running in a child process: the test binary
// re-executed with -test.run=^TestFaultConsumerProcess$. It stops on its own
// when its stdin closes (the parent exited), so no child outlives the test.
type childProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	out    string      // file with its stdout and stderr
	ledger *ledgerFile // its ledger file (startSpecChild), or nil
	exited chan struct{}
	mu     sync.Mutex
	dead   bool
}

// startChild starts a child consumer named name. It is SIGKILLed, if still
// running, in t.Cleanup.
func startChild(t *testing.T, env map[string]string) *childProc {
	t.Helper()
	return startChildTest(t, "TestFaultConsumerProcess", env)
}

// startChildTest is startChild running the child-process test named test;
// env[childEnvConsumer] names the child.
func startChildTest(t *testing.T, test string, env map[string]string) *childProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	name := env[childEnvConsumer]
	outPath := filepath.Join(t.TempDir(), "child-"+name+".out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatalf("child output file: %v", err)
	}
	defer out.Close()
	cmd := exec.Command(exe, "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("child stdin: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child consumer: %v", err)
	}
	c := &childProc{name: name, cmd: cmd, stdin: stdin, out: outPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.exited) }() // reaps it
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("output of child consumer %s:\n%s", name, tailText(c.output(), 40))
		}
	})
	return c
}

// kill SIGKILLs the child (also a stopped one) and reaps it. It does
// nothing the second time.
func (c *childProc) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	c.dead = true
	_ = c.cmd.Process.Kill()
	<-c.exited
	_ = c.stdin.Close()
}

// signal sends sig to the child while it runs.
func (c *childProc) signal(sig os.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dead {
		_ = c.cmd.Process.Signal(sig)
	}
}

// wait waits up to d for the child to exit, and reports whether it did.
func (c *childProc) wait(d time.Duration) bool {
	select {
	case <-c.exited:
		c.mu.Lock()
		c.dead = true
		c.mu.Unlock()
		return true
	case <-time.After(d):
		return false
	}
}

// pid returns the child's process id.
func (c *childProc) pid() int { return c.cmd.Process.Pid }

// runChild runs c in a child process until the parent closes its stdin
// (or exits), and fails the child's test if Run returns an error.
func runChild(t *testing.T, c *Consumer, name string) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("child consumer %s running (pid %d)\n", name, os.Getpid())
	err := c.Run(ctx)
	cancel()
	<-stdinDone
	require.NoError(t, err)
}

// stop asks the child to shut down gracefully (its stdin closes) and waits
// for it to exit; it returns the exit error.
func (c *childProc) stop(timeout time.Duration) error {
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if dead {
		return nil
	}
	_ = c.stdin.Close()
	if !c.wait(timeout) {
		c.kill()
		return fmt.Errorf("child consumer %s did not exit within %v of being asked to stop", c.name, timeout)
	}
	if err := c.cmd.ProcessState; err != nil && !err.Success() {
		return fmt.Errorf("child consumer %s: %s", c.name, err)
	}
	return nil
}

func (c *childProc) output() string {
	b, _ := os.ReadFile(c.out)
	return string(b)
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// parseSleep parses "min-max" milliseconds.
func parseSleep(s string) (time.Duration, time.Duration) {
	a, b, _ := strings.Cut(s, "-")
	lo, _ := strconv.Atoi(a)
	hi, err := strconv.Atoi(b)
	if err != nil {
		hi = lo
	}
	return time.Duration(lo) * time.Millisecond, time.Duration(max(lo, hi)) * time.Millisecond
}

func randBetween(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// compareIDs compares two stream entry ids ("ms-seq").
func compareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as != bs:
		if as < bs {
			return -1
		}
		return 1
	}
	return 0
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// errChildRace is what a child's output shows when the race detector fired.
var errChildRace = errors.New("race detector report in a child consumer process")

// checkChildOutput fails t if a child's output shows a data race or a panic.
func checkChildOutput(t *testing.T, c *childProc) {
	t.Helper()
	out := c.output()
	if strings.Contains(out, "WARNING: DATA RACE") {
		t.Errorf("%v %s:\n%s", errChildRace, c.name, tailText(out, 60))
	}
	if i := strings.Index(out, "panic:"); i >= 0 && !bytes.Contains([]byte(out[i:]), []byte("handler panicked")) {
		t.Errorf("child consumer %s panicked:\n%s", c.name, tailText(out[i:], 60))
	}
}

// faultHold lets d of wall time pass on purpose: the length of a fault
// (Redis frozen, connections refused, a registry outage), a handler's
// simulated work, or the pace of a load generator or of a poll. It is the
// fault suite's one wall-clock wait, and no test learns anything from it:
// what a test must know it learns from a condition (waitProgress), a
// process's output or an Observer event.
func faultHold(d time.Duration) { time.Sleep(d) }
