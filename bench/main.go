// Command bench measures the completion consumer against three peers on one
// Redis: a call-for-call Go rendering of the Python consumer loop,
// watermill-redisstream, and a bare batched go-redis loop (the ceiling).
//
//	cd bench && go run .            # full run, several minutes
//	cd bench && go run . -smoke     # a quick check that everything works
//
// It uses the Redis at REDIS_ADDR, or starts a private redis-server. See
// README.md for the modes and flags.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// Modes.
const (
	modeThroughput  = "throughput"
	modeLatency     = "latency"
	modeSlowHandler = "slow-handler"
	modeMemory      = "memory"
)

// memoryByDefault tells whether a run without -mode includes the memory
// mode (never with -smoke). It does: at -runs 3 the whole mode takes about
// half a minute.
const memoryByDefault = true

type options struct {
	n          int
	runs       int
	rate       int
	duration   time.Duration
	slowDelay  time.Duration
	svgPath    string
	mdPath     string
	impls      string
	modes      string
	cpuProfile string
	memProfile string
	memRate    int
	batch      int
	readAhead  int64
	bareCount  int
	smoke      bool
	memN       string
	memNs      []int // parsed from memN
}

// wantMode tells whether mode is selected: named in -mode, or, without
// -mode, one of the default modes.
func (o options) wantMode(mode string) bool {
	if o.modes == "" {
		return mode != modeMemory || (memoryByDefault && !o.smoke)
	}
	return slices.Contains(strings.Split(o.modes, ","), mode)
}

// wantImpl tells whether the implementation is selected.
func (o options) wantImpl(name string) bool {
	return o.impls == "" || slices.Contains(strings.Split(o.impls, ","), name)
}

// fixtureSize is how many tasks the throughput, latency and slow-handler
// modes need registered (at least memTasks).
func (o options) fixtureSize() int {
	n := memTasks
	if o.wantMode(modeThroughput) || o.wantMode(modeSlowHandler) {
		n = max(n, o.n)
	}
	if o.wantMode(modeLatency) {
		n = max(n, o.latencyTotal())
	}
	return n
}

// latencyTotal is how many messages the latency mode publishes.
func (o options) latencyTotal() int {
	return max(1, int(float64(o.rate)*o.duration.Seconds()))
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "throughput backlog size (slow-handler uses n/10)")
	flag.IntVar(&o.runs, "runs", 3, "runs per figure; the median is reported")
	flag.IntVar(&o.rate, "rate", 5000, "latency mode: messages published per second")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "latency mode: how long to publish")
	flag.DurationVar(&o.slowDelay, "slow", time.Millisecond, "slow-handler mode: handler time per message")
	flag.StringVar(&o.svgPath, "svg", "results.svg", "throughput bar chart to write (empty: none)")
	flag.StringVar(&o.mdPath, "md", "results.md", "markdown report to write (empty: none)")
	flag.StringVar(&o.impls, "impl", "", "comma-separated implementations to run (default all): completion,python-loop,watermill,bare-go-redis; and completion-512m (MaxReadAheadBytes 512 MiB), only when named")
	flag.StringVar(&o.modes, "mode", "", "comma-separated modes to run (default all; -smoke: all but memory): throughput,latency,slow-handler,memory; and memory-large and fanout, only when named (fanout also runs small with -smoke)")
	flag.StringVar(&o.memN, "memn", "100000,300000,1000000", "memory mode: comma-separated backlog sizes to drain")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole program to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the whole program to this file")
	flag.IntVar(&o.memRate, "memprofilerate", 0, "runtime.MemProfileRate to use with -memprofile (0: Go's default; 1: every allocation)")
	flag.IntVar(&o.batch, "batch", 0, "completion Config.BatchSize (0: the library default); for experiments")
	flag.Int64Var(&o.readAhead, "readahead", 0, "completion Config.MaxReadAheadBytes (0: the library default); for experiments")
	flag.IntVar(&o.bareCount, "barecount", defaultBareCount, "bare-go-redis XREADGROUP COUNT; for experiments (e.g. 64, the reads of a consumer planned at MaxPayloadBytes)")
	flag.BoolVar(&o.smoke, "smoke", false, "quick check: n=2000, latency 1s at 1000 msgs/s, 1 run")
	flag.Parse()
	if o.smoke {
		o.n, o.runs, o.rate, o.duration = 2000, 1, 1000, time.Second
	}
	if o.bareCount < 1 {
		fmt.Fprintf(os.Stderr, "bench: -barecount is %d; it must be at least 1\n", o.bareCount)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAIL:", err)
		os.Exit(1)
	}
}

// fanoutMode runs the fanout mode when it is wanted (fanout.go sets it; a
// build without that file, as compare.sh makes for a commit older than
// taskstream, has no fanout mode).
var fanoutMode func(b *bench, ctx context.Context) (done bool, err error)

func run(o options) error {
	if o.n < 10 || o.runs < 1 || o.rate < 1 || o.duration <= 0 {
		return errors.New("-n must be at least 10, -runs, -rate and -duration positive")
	}
	memNs, err := parseMemN(o.memN)
	if err != nil {
		return err
	}
	o.memNs = memNs
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if o.memProfile != "" && o.memRate > 0 {
		runtime.MemProfileRate = o.memRate
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	addr, shutdown, err := redisAddr(ctx)
	if err != nil {
		return err
	}
	defer shutdown()

	b := &bench{
		opts: o,
		addr: addr,
		rdb:  redis.NewClient(&redis.Options{Addr: addr}),
		log:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		tag:  fmt.Sprintf("bench:%d:%d", os.Getpid(), time.Now().UnixNano()),
	}
	defer b.rdb.Close()
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", addr, err)
	}
	m, err := b.machine(ctx)
	if err != nil {
		return err
	}
	if fanoutMode != nil { // fanout.go
		if done, err := fanoutMode(b, ctx); done || err != nil {
			return err
		}
	}
	b.fx = newFixtures(o.fixtureSize())
	b.memFx = newFixtures(memTasks)

	if o.modes != "" && slices.Contains(strings.Split(o.modes, ","), modeMemoryLarge) {
		if err := b.memoryLarge(ctx, os.Stdout); err != nil {
			return err
		}
		if o.modes == modeMemoryLarge {
			return nil
		}
	}
	results, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	m.loadEnd = loadAvg()
	rep := report{machine: m, opts: o, rows: results}
	rep.print(os.Stdout)
	if o.mdPath != "" {
		if err := os.WriteFile(o.mdPath, []byte(rep.markdown()), 0o644); err != nil {
			return err
		}
	}
	if o.svgPath != "" {
		if err := os.WriteFile(o.svgPath, []byte(rep.svg()), 0o644); err != nil {
			return err
		}
	}
	if o.memProfile != "" {
		f, err := os.Create(o.memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC() // the profile is as of the last collection: include everything
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
	}
	return nil
}

// redisAddr returns REDIS_ADDR, or starts a private redis-server on a free
// port in a temporary directory and returns a function that kills it.
func redisAddr(ctx context.Context) (string, func(), error) {
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return addr, func() {}, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start redis-server (or set REDIS_ADDR): %w", err)
	}
	shutdown := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c.Ping(ctx).Err() == nil {
			return addr, shutdown, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			shutdown()
			return "", nil, errors.New("redis-server did not answer within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bench holds what every run shares.
type bench struct {
	opts options
	addr string
	rdb  *redis.Client // the driver's own client: publishing, polling, cleanup
	log  *slog.Logger
	fx   *fixtures
	// memFx are the memory mode's memTasks tasks, used cyclically.
	memFx *fixtures
	tag   string
	seq   int
}

// machine describes where the benchmark runs.
func (b *bench) machine(ctx context.Context) (machine, error) {
	info, err := b.rdb.Info(ctx, "server").Result()
	if err != nil {
		return machine{}, err
	}
	version := "unknown"
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "redis_version:"); ok {
			version = v
		}
	}
	host, _ := os.Hostname()
	return machine{
		cpus:   runtime.NumCPU(),
		goVer:  runtime.Version(),
		redis:  version,
		host:   host,
		addr:   b.addr,
		date:   time.Now().UTC().Format("2006-01-02 15:04 MST"),
		goarch: runtime.GOOS + "/" + runtime.GOARCH,
		load:   loadAvg(),
	}, nil
}

// loadAvg returns the 1-minute load average, or "" where it is unknown.
// Other work on the machine skews every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// impl is one consumer implementation under test.
type impl struct {
	name        string
	concurrency int // reported; for completion also the Config value
	format      wireFormat
	// run consumes env.stream as env.consumer in env.group, calling
	// env.handle once per message handled, until ctx is cancelled (or,
	// for readers blocked in XREADGROUP, until the stream is deleted).
	run func(ctx context.Context, e *env) error
	// explicit: run only when -impl names it.
	explicit bool
}

// wireFormat is how a message is laid out in a stream entry.
type wireFormat int

const (
	formatCompletion wireFormat = iota // one field "data" holding the JSON (completion.Publish)
	formatWatermill                    // watermill's fields, the same JSON as "payload"
)

// env is what an implementation gets for one run.
type env struct {
	rdb      *redis.Client // a client of the run's own
	addr     string
	stream   string
	group    string
	consumer string
	// concurrency and batch are the wanted Config.Concurrency and
	// Config.BatchSize (completion only; 0 means the default).
	concurrency, batch int
	readAhead          int64 // Config.MaxReadAheadBytes (completion only; 0: the default)
	bareCount          int   // the bare loop's COUNT
	log                *slog.Logger
	fx                 *fixtures
	handle             func(result []byte) // the handler's work; call once per message
}

// session is one run's stream and its handled count.
type session struct {
	stream, group string
	target        int64
	handled       atomic.Int64
	done          chan struct{} // closed when handled reaches target
	hook          func(result []byte)
	// tasks, when positive, makes message i refer to task i % tasks, and
	// fx, when set, is the registry the consumer gets instead of the
	// bench's own.
	tasks int
	fx    *fixtures
}

func (s *session) handle(result []byte) {
	if s.hook != nil {
		s.hook(result)
	}
	if s.handled.Add(1) == s.target {
		close(s.done)
	}
}

func (s *session) keys() []string {
	return []string{s.stream, completion.DeadLetterStreamFor(s.stream)}
}

func (b *bench) newSession(target int, hook func([]byte)) *session {
	b.seq++
	return &session{
		stream: fmt.Sprintf("%s:%d", b.tag, b.seq),
		group:  "bench",
		target: int64(target),
		done:   make(chan struct{}),
		hook:   hook,
	}
}

// runAll runs every selected implementation in every selected mode, the
// runs of one mode taken in turn across implementations, and returns the
// medians.
func (b *bench) runAll(ctx context.Context) ([]row, error) {
	all := []impl{
		{name: "completion", concurrency: 1, format: formatCompletion, run: runCompletion},
		{name: "completion", concurrency: 16, format: formatCompletion, run: runCompletion},
		{name: "python-loop", concurrency: 1, format: formatCompletion, run: runPythonLoop},
		{name: "watermill", concurrency: 1, format: formatWatermill, run: runWatermill},
		{name: "bare-go-redis", concurrency: 1, format: formatCompletion, run: runBare},
		// Only when named: the consumer with a read-ahead budget that lets
		// it read 500 entries at a time, as the bare loop does, to show what
		// the default budget's smaller reads cost.
		{name: "completion-512m", concurrency: 16, format: formatCompletion, explicit: true, run: func(ctx context.Context, e *env) error {
			e.readAhead = 512 << 20
			return runCompletion(ctx, e)
		}},
	}
	var impls []impl
	for _, im := range all {
		if b.opts.wantImpl(im.name) && (!im.explicit || b.opts.impls != "") {
			impls = append(impls, im)
		}
	}
	slow := []impl{
		{name: "completion", concurrency: 1, format: formatCompletion, run: runCompletion},
		{name: "completion", concurrency: 64, format: formatCompletion, run: runCompletion},
	}
	if !b.opts.wantImpl("completion") {
		slow = nil
	}
	var mem []impl
	if b.opts.wantImpl("completion") {
		mem = []impl{{name: "completion", concurrency: 16, format: formatCompletion, run: runCompletion}}
	}

	type job struct {
		mode string
		list []impl
		once func(context.Context, impl) (measure, error)
		msgs int // the backlog, where it differs between jobs of one mode
	}
	jobs := []job{
		{modeThroughput, impls, func(ctx context.Context, im impl) (measure, error) {
			return b.throughput(ctx, im, b.opts.n, nil)
		}, 0},
		{modeLatency, impls, b.latency, 0},
		{modeSlowHandler, slow, func(ctx context.Context, im impl) (measure, error) {
			delay := b.opts.slowDelay
			return b.throughput(ctx, im, max(1, b.opts.n/10), func([]byte) { time.Sleep(delay) })
		}, 0},
	}
	for _, n := range b.opts.memNs {
		jobs = append(jobs, job{modeMemory, mem, func(ctx context.Context, im impl) (measure, error) {
			return b.memory(ctx, im, n)
		}, n})
	}
	var rows []row
	for _, j := range jobs {
		if !b.opts.wantMode(j.mode) || len(j.list) == 0 {
			continue
		}
		if j.mode == modeMemory {
			// The memory jobs run last and use memFx only. Let the other
			// modes' fixtures (a registry of -n tasks) go: the GC lets the
			// heap grow in proportion to what is live, so they would
			// inflate the peak over the baseline by about their own size.
			b.fx = nil
		}
		got := make([][]measure, len(j.list))
		for r := 0; r < b.opts.runs; r++ {
			for i, im := range j.list {
				m, err := j.once(ctx, im)
				if err != nil {
					return nil, fmt.Errorf("%s %s concurrency=%d run %d: %w", j.mode, im.name, im.concurrency, r+1, err)
				}
				mode := j.mode
				if j.msgs > 0 {
					mode += " n=" + strconv.Itoa(j.msgs)
				}
				fmt.Fprintf(os.Stderr, "run %d/%d %-13s %-12s c=%-3d %s\n", r+1, b.opts.runs, im.name, mode, im.concurrency, m)
				got[i] = append(got[i], m)
			}
		}
		for i, im := range j.list {
			rows = append(rows, row{impl: im.name, mode: j.mode, concurrency: im.concurrency, msgs: j.msgs, m: median(got[i]), rounds: got[i]})
		}
	}
	return rows, nil
}

// measure is one run's figures; zero where a metric does not apply.
type measure struct {
	msgsPerS, allocsPerMsg, bytesPerMsg, p50ms, p99ms, maxms float64
	// cpuUSPerMsg is the CPU time (user and system) the process spent per
	// message while draining: the consumer's own cost, not Redis's.
	cpuUSPerMsg float64
	// gcUSPerMsg is the part of it the garbage collector spent, as the Go
	// runtime estimates it (runtime/metrics).
	gcUSPerMsg float64
	// memory mode, in MiB: RSS before, at the peak of and after the drain,
	// and the Go heap in use at the peak sample
	baselineMB, peakMB, endMB, heapMB float64
}

func (m measure) String() string {
	if m.peakMB > 0 {
		return fmt.Sprintf("baseline_rss=%.1fMB peak_rss=%.1fMB end_rss=%.1fMB heap_inuse=%.1fMB",
			m.baselineMB, m.peakMB, m.endMB, m.heapMB)
	}
	return fmt.Sprintf("msgs/s=%.0f cpu/msg=%.2fµs gc/msg=%.2fµs allocs/msg=%.1f bytes/msg=%.0f p50=%.3fms p99=%.3fms max=%.3fms",
		m.msgsPerS, m.cpuUSPerMsg, m.gcUSPerMsg, m.allocsPerMsg, m.bytesPerMsg, m.p50ms, m.p99ms, m.maxms)
}

// median takes the median of each metric separately.
func median(ms []measure) measure {
	pick := func(f func(measure) float64) float64 {
		v := make([]float64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return measure{
		msgsPerS:     pick(func(m measure) float64 { return m.msgsPerS }),
		allocsPerMsg: pick(func(m measure) float64 { return m.allocsPerMsg }),
		cpuUSPerMsg:  pick(func(m measure) float64 { return m.cpuUSPerMsg }),
		gcUSPerMsg:   pick(func(m measure) float64 { return m.gcUSPerMsg }),
		bytesPerMsg:  pick(func(m measure) float64 { return m.bytesPerMsg }),
		p50ms:        pick(func(m measure) float64 { return m.p50ms }),
		p99ms:        pick(func(m measure) float64 { return m.p99ms }),
		maxms:        pick(func(m measure) float64 { return m.maxms }),
		baselineMB:   pick(func(m measure) float64 { return m.baselineMB }),
		peakMB:       pick(func(m measure) float64 { return m.peakMB }),
		endMB:        pick(func(m measure) float64 { return m.endMB }),
		heapMB:       pick(func(m measure) float64 { return m.heapMB }),
	}
}

// throughput pre-publishes n messages, then times draining them: every one
// handled and acknowledged.
func (b *bench) throughput(ctx context.Context, im impl, n int, hook func([]byte)) (measure, error) {
	s := b.newSession(n, hook)
	defer b.rdb.Del(context.WithoutCancel(ctx), s.keys()...)
	if err := b.publishBacklog(ctx, s, im.format, n); err != nil {
		return measure{}, err
	}
	if err := b.createGroup(ctx, s); err != nil {
		return measure{}, err
	}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start, cpuStart, gcStart := time.Now(), cpuTime(), gcCPUTime()
	r := b.start(ctx, im, s)
	if err := b.waitDrained(ctx, s, r, 10*time.Minute); err != nil {
		r.abort()
		return measure{}, err
	}
	elapsed, cpu, gc := time.Since(start), cpuTime()-cpuStart, gcCPUTime()-gcStart
	runtime.ReadMemStats(&after)
	if err := b.finish(ctx, s, r); err != nil {
		return measure{}, err
	}
	return measure{
		msgsPerS:     float64(n) / elapsed.Seconds(),
		allocsPerMsg: float64(after.Mallocs-before.Mallocs) / float64(n),
		bytesPerMsg:  float64(after.TotalAlloc-before.TotalAlloc) / float64(n),
		cpuUSPerMsg:  float64(cpu.Microseconds()) / float64(n),
		gcUSPerMsg:   float64(gc.Microseconds()) / float64(n),
	}, nil
}

// latency publishes at a steady rate, each message carrying its publish time,
// and records how long each took to reach the handler.
func (b *bench) latency(ctx context.Context, im impl) (measure, error) {
	total := b.opts.latencyTotal()
	samples := make([]int64, total)
	var next atomic.Int64
	s := b.newSession(total, func(result []byte) {
		if i := next.Add(1) - 1; i < int64(len(samples)) {
			samples[i] = time.Now().UnixNano() - publishTime(result)
		}
	})
	defer b.rdb.Del(context.WithoutCancel(ctx), s.keys()...)
	if err := b.createGroup(ctx, s); err != nil {
		return measure{}, err
	}
	r := b.start(ctx, im, s)
	time.Sleep(200 * time.Millisecond) // let the consumer reach its first read
	if err := b.publishPaced(ctx, s, im.format, total); err != nil {
		r.abort()
		return measure{}, err
	}
	if err := b.waitDrained(ctx, s, r, 2*time.Minute); err != nil {
		r.abort()
		return measure{}, err
	}
	if err := b.finish(ctx, s, r); err != nil {
		return measure{}, err
	}
	slices.Sort(samples)
	ms := func(q float64) float64 {
		i := min(len(samples)-1, int(q*float64(len(samples))))
		return float64(samples[i]) / 1e6
	}
	return measure{p50ms: ms(0.50), p99ms: ms(0.99), maxms: float64(samples[len(samples)-1]) / 1e6}, nil
}

// publishTime reads t from a result object {"t":<unix nanoseconds>}, or
// from any JSON text that holds that key first.
func publishTime(result []byte) int64 {
	i := bytes.Index(result, []byte(`"t":`))
	if i < 0 {
		return 0
	}
	var t int64
	for _, c := range result[i+4:] {
		if c < '0' || c > '9' {
			break
		}
		t = t*10 + int64(c-'0')
	}
	return t
}

func (b *bench) createGroup(ctx context.Context, s *session) error {
	err := b.rdb.XGroupCreateMkStream(ctx, s.stream, s.group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// running is an implementation at work on one session.
type running struct {
	cancel context.CancelFunc
	errc   chan error
	client *redis.Client
}

func (r *running) abort() {
	r.cancel()
	r.client.Close()
}

func (b *bench) start(ctx context.Context, im impl, s *session) *running {
	runCtx, cancel := context.WithCancel(ctx)
	fx := b.fx
	if s.fx != nil {
		fx = s.fx
	}
	r := &running{
		cancel: cancel,
		errc:   make(chan error, 1),
		client: redis.NewClient(&redis.Options{Addr: b.addr}),
	}
	e := &env{
		rdb:         r.client,
		addr:        b.addr,
		stream:      s.stream,
		group:       s.group,
		consumer:    fmt.Sprintf("%s-c%d-%d", im.name, im.concurrency, b.seq),
		concurrency: im.concurrency,
		batch:       b.opts.batch,
		readAhead:   b.opts.readAhead,
		bareCount:   b.opts.bareCount,
		log:         b.log,
		fx:          fx,
		handle:      s.handle,
	}
	go func() { r.errc <- im.run(runCtx, e) }()
	return r
}

// waitDrained waits until the handler has seen every message and the group
// has nothing pending: all handled and acknowledged.
func (b *bench) waitDrained(ctx context.Context, s *session, r *running, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
	case err := <-r.errc:
		r.errc <- err
		return fmt.Errorf("the consumer stopped early after %d of %d messages: %v", s.handled.Load(), s.target, err)
	case <-t.C:
		return fmt.Errorf("timed out: %d of %d messages handled", s.handled.Load(), s.target)
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		p, err := b.rdb.XPending(ctx, s.stream, s.group).Result()
		if err != nil {
			return fmt.Errorf("XPENDING: %w", err)
		}
		if p.Count == 0 {
			return nil
		}
		select {
		case <-t.C:
			return fmt.Errorf("timed out: %d entries still pending after all were handled", p.Count)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// finish stops the implementation and checks the outcome: nothing pending,
// every message handled exactly once. Readers blocked in XREADGROUP that do
// not stop on cancellation are woken by deleting the stream.
func (b *bench) finish(ctx context.Context, s *session, r *running) error {
	defer r.client.Close()
	r.cancel()
	var runErr error
	returned := false
	select {
	case runErr = <-r.errc:
		returned = true
	case <-time.After(500 * time.Millisecond):
	}
	p, err := b.rdb.XPending(ctx, s.stream, s.group).Result()
	if err != nil {
		return fmt.Errorf("XPENDING after the drain: %w", err)
	}
	if err := b.rdb.Del(ctx, s.keys()...).Err(); err != nil {
		return err
	}
	if !returned {
		select {
		case runErr = <-r.errc:
		case <-time.After(15 * time.Second):
			return errors.New("the consumer did not stop within 15s of its context's cancellation and the stream's deletion")
		}
	}
	if runErr != nil {
		return fmt.Errorf("the consumer returned an error: %w", runErr)
	}
	if p.Count != 0 {
		return fmt.Errorf("%d entries still pending at the end (want 0)", p.Count)
	}
	if got := s.handled.Load(); got != s.target {
		return fmt.Errorf("handled %d messages, want exactly %d", got, s.target)
	}
	return nil
}
