package main

// The fanout mode: live delivery of completions to many subscribers on one
// pod, taskstream's hub against the naive design (one blocking XREAD per
// subscriber), in the same run on the same Redis.
//
//	cd bench && go run . -mode fanout -md '' -svg ''
//	cd bench && go run . -mode fanout -fanout-subs 1000,10000 -fanout-duration 10s -md '' -svg ''
//
// For each subscriber count, each implementation gets a fresh set of tasks,
// one subscriber per task, and then completions at -fanout-rate per second
// over random tasks for -fanout-duration: completion.Publish -> a
// completion.Consumer (its own client) whose handler appends the outcome
// event to the task's stream (taskstream.Streams.Append, which also
// publishes the notification) -> the subscriber. Subscribers stay (no
// finish event), so all of them are live for the whole run.
//
//   - impl=baseline: no subscribers; the latency is taken when the
//     handler's append returns. The others' figures over it are the cost
//     of the fan-out alone (fanout_cpu_us_per_msg, ...).
//   - impl=completion: a taskstream.Hub on a client of its own; each
//     subscriber is a goroutine blocked in Subscription.Next.
//   - impl=completion-sse (up to -fanout-sse-max subscribers): the same hub
//     behind the SSE handler; each subscriber is an HTTP client of it, in
//     this process, and the latency is read from the HTTP response.
//   - impl=naive: a goroutine per subscriber looping on XREAD BLOCK 0 from
//     its last id, each on a connection of its own (go-redis defaults).
//   - impl=xread-multi (with -fanout-impl): multiplexed XREAD, the issue's
//     other candidate: 4 connections, each blocked in one XREAD BLOCK 0 over
//     a quarter of the streams with their last ids, re-issued whenever it
//     returns. (On Redis Cluster a multi-key XREAD must stay in one slot,
//     and the Python layout's keys carry no hash tag: it would need a
//     connection per slot.)
//
// Figures: redis_conns is the most connections of the subscribers' client
// seen during the run (CLIENT LIST, by client name, at a quarter, half and
// three quarters of the publishing window and at its end); p50/p99 are from
// Publish to the subscriber holding the event; bytes_per_sub is Go heap in
// use plus goroutine stacks after the subscribers are set up and idle,
// minus before, per subscriber (for SSE it includes the HTTP server's and
// the client's side of each connection, both in this process);
// redis_bytes_per_sub is Redis's used_memory the same way; cpu_us_per_msg is
// this process's CPU (user+sys) over the publishing window per completion,
// and redis_cpu_us_per_msg Redis's.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/redisregistry"
	"github.com/streamrelay/completion/taskstream"
)

const modeFanout = "fanout"

// multiConns is how many connections impl=xread-multi spreads its
// subscribers over: the budget of 4.
const multiConns = 4

var fanoutFlags struct {
	subs     string
	rate     int
	duration time.Duration
	impls    string
	sseMax   int
}

func init() {
	fanoutMode = (*bench).fanoutMode
	flag.StringVar(&fanoutFlags.subs, "fanout-subs", "1000,10000", "fanout mode: comma-separated subscriber counts (-smoke: 200)")
	flag.IntVar(&fanoutFlags.rate, "fanout-rate", 1000, "fanout mode: completions per second (-smoke: 200)")
	flag.DurationVar(&fanoutFlags.duration, "fanout-duration", 10*time.Second, "fanout mode: how long to publish (-smoke: 1s)")
	flag.StringVar(&fanoutFlags.impls, "fanout-impl", "baseline,completion,completion-sse,naive", "fanout mode: implementations (completion-sse runs up to -fanout-sse-max subscribers)")
	flag.IntVar(&fanoutFlags.sseMax, "fanout-sse-max", 1000, "fanout mode: the most subscribers completion-sse connects over HTTP")
}

// fanoutWanted tells whether the fanout mode runs: when named in -mode, and
// (small) in -smoke runs without -mode. A full run without -mode leaves it
// out: at 10,000 naive subscribers it needs 10,000 connections.
func fanoutWanted(o options) bool {
	if o.modes == "" {
		return o.smoke
	}
	return slices.Contains(strings.Split(o.modes, ","), modeFanout)
}

// fanoutOnly tells whether fanout is the only mode asked for.
func fanoutOnly(o options) bool { return o.modes == modeFanout }

// fanoutMode runs the fanout mode if it is wanted. It reports done when
// nothing else is to run.
func (b *bench) fanoutMode(ctx context.Context) (done bool, err error) {
	if !fanoutWanted(b.opts) {
		return false, nil
	}
	f := fanoutFlags
	if b.opts.smoke {
		f.subs, f.rate, f.duration = "200", 200, time.Second
	}
	var counts []int
	for _, s := range strings.Split(f.subs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return false, fmt.Errorf("-fanout-subs: %q is not a positive count", s)
		}
		counts = append(counts, n)
	}
	if f.rate < 1 || f.duration <= 0 {
		return false, errors.New("-fanout-rate and -fanout-duration must be positive")
	}
	b.raiseMaxClients(ctx, slices.Max(counts))
	for _, n := range counts {
		results := map[string]fanoutResult{}
		for _, im := range strings.Split(f.impls, ",") {
			if im == "completion-sse" && n > f.sseMax {
				continue
			}
			r, err := b.fanoutRun(ctx, im, n, f)
			if err != nil {
				return false, fmt.Errorf("fanout %s subscribers=%d: %w", im, n, err)
			}
			if base, ok := results["baseline"]; ok && im != "baseline" {
				r.fanoutCPUPerMsg = r.cpuPerMsg - base.cpuPerMsg
				r.fanoutRedisCPUPerMsg = r.redisCPUPerMsg - base.redisCPUPerMsg
				r.hasBase = true
			}
			fmt.Println(r.line())
			results[im] = r
		}
		if c, ok := results["completion"]; ok {
			if nv, ok := results["naive"]; ok {
				fmt.Printf("RATIO naive/completion mode=fanout subscribers=%d redis_conns=%.0fx bytes_per_sub=%.1fx redis_bytes_per_sub=%.1fx cpu_us_per_msg=%.2fx fanout_cpu_us_per_msg=%.2fx fanout_redis_cpu_us_per_msg=%.2fx p50=%.2fx p99=%.2fx\n",
					n, ratio(nv.conns, c.conns), ratio(nv.bytesPerSub, c.bytesPerSub), ratio(nv.redisBytesPerSub, c.redisBytesPerSub),
					ratio(nv.cpuPerMsg, c.cpuPerMsg), ratio(nv.fanoutCPUPerMsg, c.fanoutCPUPerMsg), ratio(nv.fanoutRedisCPUPerMsg, c.fanoutRedisCPUPerMsg),
					ratio(nv.p50, c.p50), ratio(nv.p99, c.p99))
			}
		}
	}
	return fanoutOnly(b.opts), nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// raiseMaxClients lets Redis take the naive design's connections.
func (b *bench) raiseMaxClients(ctx context.Context, subs int) {
	want := subs + 1000
	cur, err := b.rdb.ConfigGet(ctx, "maxclients").Result()
	if err == nil {
		if n, _ := strconv.Atoi(cur["maxclients"]); n >= want {
			return
		}
	}
	if err := b.rdb.ConfigSet(ctx, "maxclients", strconv.Itoa(want)).Err(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: fanout: CONFIG SET maxclients %d: %v (the naive design may run out of connections)\n", want, err)
	}
}

type fanoutResult struct {
	impl                        string
	subs                        int
	sse                         bool
	conns                       float64
	p50, p99, max               float64
	bytesPerSub                 float64
	redisBytesPerSub            float64
	cpuPerMsg, redisCPUPerMsg   float64
	sent, received, setupMillis int
	// over the baseline of the same subscriber count
	fanoutCPUPerMsg, fanoutRedisCPUPerMsg float64
	hasBase                               bool
}

func (r fanoutResult) line() string {
	sse := 0
	if r.sse {
		sse = 1
	}
	base := ""
	if r.hasBase {
		base = fmt.Sprintf(" fanout_cpu_us_per_msg=%.1f fanout_redis_cpu_us_per_msg=%.1f", r.fanoutCPUPerMsg, r.fanoutRedisCPUPerMsg)
	}
	return fmt.Sprintf("RESULT impl=%s mode=fanout subscribers=%d redis_conns=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f bytes_per_sub=%.0f redis_bytes_per_sub=%.0f cpu_us_per_msg=%.1f redis_cpu_us_per_msg=%.1f%s sse=%d sent=%d received=%d setup_ms=%d",
		r.impl, r.subs, r.conns, r.p50, r.p99, r.max, r.bytesPerSub, r.redisBytesPerSub, r.cpuPerMsg, r.redisCPUPerMsg, base, sse, r.sent, r.received, r.setupMillis)
}

// fanoutEnv is one run's keys, clients and tasks.
type fanoutEnv struct {
	b        *bench
	prefix   string
	tasks    []completion.Task
	registry *redisregistry.Registry
	streams  *taskstream.Streams // on the producer/consumer client
	clients  []*redis.Client
	// samples receives one latency (ns) per event a subscriber holds.
	mu      sync.Mutex
	samples []int64
	got     atomic.Int64
}

func (e *fanoutEnv) newClient(name string, poolSize int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.b.addr, ClientName: name, PoolSize: poolSize})
	e.clients = append(e.clients, c)
	return c
}

func (e *fanoutEnv) close(ctx context.Context) {
	for _, c := range e.clients {
		_ = c.Close()
	}
	// Delete the run's keys.
	var cursor uint64
	for {
		keys, next, err := e.b.rdb.Scan(ctx, cursor, e.prefix+"*", 1000).Result()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			_ = e.b.rdb.Unlink(ctx, keys...).Err()
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// record notes that a subscriber holds an event published at t (ns).
func (e *fanoutEnv) record(t int64) {
	d := time.Now().UnixNano() - t
	e.mu.Lock()
	e.samples = append(e.samples, d)
	e.mu.Unlock()
	e.got.Add(1)
}

// eventTime reads the publish time out of an outcome event, whose output
// holds the result's JSON text ({"t":<ns>,...}) as a string.
func eventTime(data []byte) int64 {
	var ev struct {
		Output string `json:"output"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return 0
	}
	return publishTime([]byte(ev.Output))
}

func (b *bench) fanoutRun(ctx context.Context, impl string, subs int, f struct {
	subs     string
	rate     int
	duration time.Duration
	impls    string
	sseMax   int
}) (fanoutResult, error) {
	b.seq++
	e := &fanoutEnv{b: b, prefix: fmt.Sprintf("%s:fanout:%d:", b.tag, b.seq)}
	defer e.close(context.WithoutCancel(ctx))
	r := fanoutResult{impl: impl, subs: subs}

	work := e.newClient("bench-fanout-work", 0) // registry writes, consumer, handler, producer
	var err error
	e.registry, err = redisregistry.New(work, redisregistry.Config{MetaPrefix: e.prefix + "meta:", OpPrefix: e.prefix + "op:"})
	if err != nil {
		return r, err
	}
	scfg := taskstream.Config{Prefix: e.prefix + "stream:", ChannelPrefix: e.prefix + "pubsub:"}
	e.streams, err = taskstream.New(work, scfg)
	if err != nil {
		return r, err
	}
	if err := e.registerTasks(ctx, subs); err != nil {
		return r, err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()

	gcMem := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse
	}
	redisMem := func() int64 { return infoInt(ctx, b.rdb, "memory", "used_memory") }

	// The subscribers, and the client whose connections they cost.
	var subClient string
	var hub *taskstream.Hub
	setupStart := time.Now()
	var memBefore uint64
	var redisBefore int64
	switch impl {
	case "completion", "completion-sse":
		subClient = "bench-fanout-hub"
		hubStreams, err := taskstream.New(e.newClient(subClient, 0), scfg)
		if err != nil {
			return r, err
		}
		hub, err = taskstream.NewHub(hubStreams, taskstream.HubConfig{Logger: b.log})
		if err != nil {
			return r, err
		}
		wg.Go(func() { _ = hub.Run(runCtx) })
		for !hub.Running() {
			time.Sleep(time.Millisecond)
		}
		memBefore, redisBefore = gcMem(), redisMem()
		if impl == "completion-sse" {
			r.sse = true
			if err := e.sseSubscribers(runCtx, &wg, hub); err != nil {
				return r, err
			}
		} else {
			for _, t := range e.tasks {
				sub, err := hub.Subscribe(runCtx, t.TaskID, "0-0")
				if err != nil {
					return r, err
				}
				wg.Go(func() {
					for {
						ev, err := sub.Next(runCtx)
						if err != nil {
							return
						}
						e.record(eventTime(ev.Data))
					}
				})
			}
		}
		waitQuiet(func() int64 { return hub.Stats().Reads })
	case "baseline":
		memBefore, redisBefore = gcMem(), redisMem()
	case "naive":
		subClient = "bench-fanout-naive"
		memBefore, redisBefore = gcMem(), redisMem()
		naive := e.newClient(subClient, subs+16)
		var blocked atomic.Int64
		for _, t := range e.tasks {
			key := scfg.Prefix + t.TaskID
			wg.Go(func() {
				last := "0-0"
				first := true
				for runCtx.Err() == nil {
					if first {
						blocked.Add(1)
						first = false
					}
					res, err := naive.XRead(runCtx, &redis.XReadArgs{Streams: []string{key, last}, Block: 0, Count: 100}).Result()
					if err != nil {
						if runCtx.Err() != nil || errors.Is(err, redis.ErrClosed) {
							return
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					for _, s := range res {
						for _, m := range s.Messages {
							last = m.ID
							if data, ok := m.Values["data"].(string); ok {
								e.record(eventTime([]byte(data)))
							}
						}
					}
				}
			})
		}
		for blocked.Load() < int64(subs) {
			time.Sleep(time.Millisecond)
		}
		// Every reader holds its connection in XREAD.
		waitQuiet(func() int64 { return int64(clientCount(ctx, b.rdb, subClient)) })
		defer naive.Close() // ends the blocked reads (before wg.Wait)
	case "xread-multi":
		// The other design the issue names: a few connections, each
		// blocked in one XREAD over its share of the streams, re-issued
		// (with every key and last id) whenever it returns.
		subClient = "bench-fanout-multi"
		memBefore, redisBefore = gcMem(), redisMem()
		multi := e.newClient(subClient, multiConns+2)
		per := (subs + multiConns - 1) / multiConns
		for c := range multiConns {
			lo, hi := c*per, min(subs, (c+1)*per)
			if lo >= hi {
				break
			}
			index := map[string]int{}
			args := make([]string, 0, 2*(hi-lo))
			for i, t := range e.tasks[lo:hi] {
				args = append(args, scfg.Prefix+t.TaskID)
				index[scfg.Prefix+t.TaskID] = i
			}
			for range hi - lo {
				args = append(args, "0-0")
			}
			n := hi - lo
			wg.Go(func() {
				for runCtx.Err() == nil {
					res, err := multi.XRead(runCtx, &redis.XReadArgs{Streams: args, Block: 0, Count: 100}).Result()
					if err != nil {
						if runCtx.Err() != nil || errors.Is(err, redis.ErrClosed) {
							return
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					for _, st := range res {
						for _, m := range st.Messages {
							args[n+index[st.Stream]] = m.ID
							if data, ok := m.Values["data"].(string); ok {
								e.record(eventTime([]byte(data)))
							}
						}
					}
				}
			})
		}
		waitQuiet(func() int64 { return int64(clientCount(ctx, b.rdb, subClient)) })
		defer multi.Close()
	default:
		return r, fmt.Errorf("unknown implementation %q (want baseline, completion, completion-sse, naive or xread-multi)", impl)
	}
	r.setupMillis = int(time.Since(setupStart).Milliseconds())
	memAfter, redisAfter := gcMem(), redisMem()
	r.bytesPerSub = float64(int64(memAfter)-int64(memBefore)) / float64(subs)
	r.redisBytesPerSub = float64(redisAfter-redisBefore) / float64(subs)

	// The consumer: completions -> task streams.
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		_, err := e.streams.Append(ctx, c.Task.TaskID, taskstream.OutcomeEvent(c.Task, c.Message))
		if err == nil && impl == "baseline" {
			e.record(publishTime(c.Message.Result)) // in Redis, announced
		}
		return err
	})
	stream := e.prefix + "completions"
	consumer, err := completion.NewConsumer(work, e.registry, handler, completion.Config{Stream: stream, Logger: b.log})
	if err != nil {
		return r, err
	}
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- consumer.Run(runCtx) }()
	for consumer.State() != completion.StateRunning {
		time.Sleep(time.Millisecond)
	}

	// Publish at the rate over random tasks, counting the subscribers'
	// connections at a quarter, half and three quarters of the window (not
	// more often: CLIENT LIST over 10,000 clients costs Redis CPU).
	total := max(1, int(float64(f.rate)*f.duration.Seconds()))
	var maxConns atomic.Int64
	sample := func() {
		if n := int64(clientCount(ctx, b.rdb, subClient)); n > maxConns.Load() {
			maxConns.Store(n)
		}
	}
	cpuBefore, redisCPUBefore := cpuTime(), redisCPU(ctx, b.rdb)
	interval := time.Second / time.Duration(f.rate)
	tick := time.NewTicker(max(interval, time.Millisecond))
	perTick := max(1, int(time.Millisecond/interval))
	for sent := 0; sent < total; {
		<-tick.C
		for range perTick {
			if sent == total {
				break
			}
			if sent > 0 && sent%(max(4, total/4)) == 0 && subClient != "" {
				sample()
			}
			task := e.tasks[rand.IntN(len(e.tasks))]
			msg := completion.Message{OperationID: fmt.Sprintf("op-%d", sent), TaskID: task.TaskID, Success: true,
				Result: json.RawMessage(resultJSON(time.Now()))}
			if _, err := completion.Publish(ctx, work, stream, msg, completion.WithMaxLen(0)); err != nil {
				tick.Stop()
				return r, err
			}
			sent++
		}
	}
	tick.Stop()
	deadline := time.Now().Add(time.Minute)
	for e.got.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cpuUsed, redisCPUUsed := cpuTime()-cpuBefore, redisCPU(ctx, b.rdb)-redisCPUBefore
	if subClient != "" {
		sample()
	}
	stop()
	if err := <-consumerDone; err != nil {
		return r, fmt.Errorf("consumer: %w", err)
	}
	r.sent, r.received = total, int(e.got.Load())
	if r.received < total {
		return r, fmt.Errorf("%d of %d events reached their subscriber within a minute", r.received, total)
	}
	r.conns = float64(maxConns.Load())
	r.cpuPerMsg = float64(cpuUsed.Microseconds()) / float64(total)
	r.redisCPUPerMsg = float64(redisCPUUsed.Microseconds()) / float64(total)
	slices.Sort(e.samples)
	q := func(p float64) float64 {
		return float64(e.samples[min(len(e.samples)-1, int(p*float64(len(e.samples))))]) / 1e6
	}
	r.p50, r.p99, r.max = q(0.5), q(0.99), float64(e.samples[len(e.samples)-1])/1e6
	if hub != nil {
		fmt.Fprintf(os.Stderr, "fanout completion subscribers=%d hub stats %+v\n", subs, hub.Stats())
	}
	return r, nil
}

// registerTasks registers n running tasks, 16 at a time.
func (e *fanoutEnv) registerTasks(ctx context.Context, n int) error {
	e.tasks = make([]completion.Task, n)
	for i := range e.tasks {
		id := fmt.Sprintf("fo-%d", i)
		e.tasks[i] = completion.Task{TaskID: id, SessionID: "s-" + id, UserID: "u", ToolCallID: "call-" + id, ToolName: "bench", OperationID: "op-" + id}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := atomic.Int64{}
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := e.registry.Register(ctx, e.tasks[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// sseSubscribers serves the SSE handler on a loopback port and connects an
// HTTP client per task, which records each outcome event it reads.
func (e *fanoutEnv) sseSubscribers(ctx context.Context, wg *sync.WaitGroup, hub *taskstream.Hub) error {
	// The SSE handler's task lookups go through a client of their own, so
	// that the hub's client counts the hub's connections only.
	reg, err := redisregistry.New(e.newClient("bench-fanout-sse-registry", 0), e.registry.Config())
	if err != nil {
		return err
	}
	h, err := taskstream.NewSSEHandler(hub, reg, taskstream.SSEConfig{Logger: e.b.log})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /tasks/{task_id}/events", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	wg.Go(func() {
		<-ctx.Done()
		_ = srv.Close()
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}
	base := "http://" + ln.Addr().String()
	connected := make(chan error, len(e.tasks))
	sem := make(chan struct{}, 64) // connect 64 at a time
	for _, t := range e.tasks {
		wg.Go(func() {
			sem <- struct{}{}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/tasks/"+t.TaskID+"/events", nil)
			resp, err := client.Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET events of %s: %s", t.TaskID, resp.Status)
			}
			var br *bufio.Reader
			if err == nil {
				br = bufio.NewReaderSize(resp.Body, 4096)
				_, err = br.ReadString('\n') // the retry hint: the handler subscribed
			}
			<-sem
			connected <- err
			if err != nil {
				return
			}
			defer resp.Body.Close()
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					if !errors.Is(err, io.EOF) && ctx.Err() == nil {
						fmt.Fprintln(os.Stderr, "bench: fanout: read SSE:", err)
					}
					return
				}
				if data, ok := strings.CutPrefix(string(line), "data: "); ok {
					e.record(eventTime([]byte(strings.TrimSpace(data))))
				}
			}
		})
	}
	for range e.tasks {
		if err := <-connected; err != nil {
			return err
		}
	}
	return nil
}

// waitQuiet waits until f stops changing for 300ms.
func waitQuiet(f func() int64) {
	last, since := f(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		time.Sleep(20 * time.Millisecond)
		if v := f(); v != last {
			last, since = v, time.Now()
		}
	}
}

// clientCount counts Redis's clients named name.
func clientCount(ctx context.Context, rdb *redis.Client, name string) int {
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		return -1
	}
	return strings.Count(list, " name="+name+" ")
}

// infoInt reads an integer field of an INFO section.
func infoInt(ctx context.Context, rdb *redis.Client, section, field string) int64 {
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// redisCPU is Redis's CPU time so far (used_cpu_user + used_cpu_sys).
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(l, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}
