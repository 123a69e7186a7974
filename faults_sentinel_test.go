package completion

// The sentinel-failover scenario, with a minimal Sentinel harness of its own
// (faultSentinel): a master, a replica and three redis-sentinel processes
// on free loopback ports, each in a temporary directory, stopped by pid.
// (A fuller harness, internal/redistest's StartSentinel, is being written
// on another branch; this one can give way to it.)

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// faultSentinelMaster is the name the sentinels monitor the master under.
const faultSentinelMaster = "faultmaster"

// faultSentinel is a Sentinel deployment owned by one test.
type faultSentinel struct {
	master, replica *redistest.Server
	// link carries the replication stream from the master to the replica:
	// stalling it makes the replica lag.
	link      *redistest.Proxy
	sentinels []*sentinelProc
}

// sentinelProc is one redis-sentinel process.
type sentinelProc struct {
	bin, dir string
	port     int
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
}

// sentinelBinary finds redis-sentinel (Debian's redis-sentinel package).
func sentinelBinary() (string, error) {
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-sentinel", "/usr/local/bin/redis-sentinel"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("redis-sentinel not found on PATH, in /usr/bin or in /usr/local/bin")
}

// startFaultSentinel starts a master, its replica (replicating through a
// proxy, link) and three sentinels (quorum 2, down-after 1 s), and waits until the replica is in sync and
// every sentinel knows the replica and the two other sentinels. Without
// redis-sentinel it skips the test, or fails it under CI.
func startFaultSentinel(t *testing.T) *faultSentinel {
	t.Helper()
	bin, err := sentinelBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it: `apt-get install -y redis-sentinel`", err)
		}
		t.Skipf("%v; install it (`apt-get install redis-sentinel`) to run this test", err)
	}
	fast := []string{"--repl-diskless-sync-delay", "0"}
	master := redistest.Start(t, redistest.Options{Args: fast})
	_, port, _ := net.SplitHostPort(master.Addr())
	link := redistest.NewProxy(t, master.Addr())
	_, linkPort, _ := net.SplitHostPort(link.Addr())
	replica := redistest.Start(t, redistest.Options{Args: append(fast, "--replicaof", "127.0.0.1", linkPort)})
	s := &faultSentinel{master: master, replica: replica, link: link}
	for range 3 {
		p := &sentinelProc{bin: bin, dir: t.TempDir()}
		t.Cleanup(p.stop) // registered after TempDir's: stops before its directory goes
		if err := p.start(port); err != nil {
			t.Fatalf("start redis-sentinel: %v\n%s", err, p.logTail(20))
		}
		s.sentinels = append(s.sentinels, p)
	}
	if !waitProgress(30*time.Second, func() bool { return s.formed(master.Addr()) == nil }) {
		t.Fatalf("the sentinels did not settle: %v%s", s.formed(master.Addr()), s.logTails(20))
	}
	return s
}

// Addrs returns the sentinels' addresses.
func (s *faultSentinel) Addrs() []string {
	var out []string
	for _, p := range s.sentinels {
		out = append(out, p.addr())
	}
	return out
}

// client returns a failover client of the deployment, closed in t.Cleanup.
func (s *faultSentinel) client(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: faultSentinelMaster, SentinelAddrs: s.Addrs(), DialTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// masterAddr returns the master's address as the sentinels name it, when
// they all agree.
func (s *faultSentinel) masterAddr() (string, error) {
	var addr string
	for _, p := range s.sentinels {
		got, err := p.query(func(ctx context.Context, c *redis.Client) (string, error) {
			a, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", faultSentinelMaster).StringSlice()
			if err != nil || len(a) != 2 {
				return "", fmt.Errorf("GET-MASTER-ADDR-BY-NAME: %v %v", a, err)
			}
			return net.JoinHostPort(a[0], a[1]), nil
		})
		if err != nil {
			return "", err
		}
		if addr != "" && got != addr {
			return "", fmt.Errorf("sentinels disagree: %s and %s", addr, got)
		}
		addr = got
	}
	return addr, nil
}

// formed checks that every sentinel names master, knows one replica and
// the two other sentinels, and that master's replica is online.
func (s *faultSentinel) formed(master string) error {
	got, err := s.masterAddr()
	if err != nil {
		return err
	}
	if got != master {
		return fmt.Errorf("the sentinels name %s as the master, want %s", got, master)
	}
	for _, p := range s.sentinels {
		if _, err := p.query(func(ctx context.Context, c *redis.Client) (string, error) {
			replicas, err := c.Do(ctx, "SENTINEL", "REPLICAS", faultSentinelMaster).Slice()
			if err != nil {
				return "", err
			}
			others, err := c.Do(ctx, "SENTINEL", "SENTINELS", faultSentinelMaster).Slice()
			if err != nil {
				return "", err
			}
			if len(replicas) != 1 || len(others) != 2 {
				return "", fmt.Errorf("sentinel %s knows %d replicas and %d other sentinels", p.addr(), len(replicas), len(others))
			}
			return "", nil
		}); err != nil {
			return err
		}
	}
	c := redis.NewClient(&redis.Options{Addr: master, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:master") || !strings.Contains(info, "connected_slaves:1") || !strings.Contains(info, "state=online") {
		return fmt.Errorf("master %s: replication not ready:\n%s", master, info)
	}
	return nil
}

// waitPromoted waits until every sentinel names addr as the master and addr
// says role:master.
func (s *faultSentinel) waitPromoted(addr string, d time.Duration) error {
	var last error
	ok := waitProgress(d, func() bool {
		got, err := s.masterAddr()
		if err == nil && got != addr {
			err = fmt.Errorf("the sentinels name %s", got)
		}
		if err == nil {
			c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
			defer c.Close()
			var info string
			if info, err = c.Info(context.Background(), "replication").Result(); err == nil && !strings.Contains(info, "role:master") {
				err = errors.New("not yet role:master")
			}
		}
		last = err
		return err == nil
	})
	if !ok {
		return fmt.Errorf("%s not promoted within %v: %v", addr, d, last)
	}
	return nil
}

func (s *faultSentinel) logTails(n int) string {
	var b strings.Builder
	for i, p := range s.sentinels {
		fmt.Fprintf(&b, "\n--- sentinel %d (%s) ---\n%s", i, p.addr(), p.logTail(n))
	}
	fmt.Fprintf(&b, "\n--- master ---\n%s\n--- replica ---\n%s", s.master.LogTail(n), s.replica.LogTail(n))
	return b.String()
}

func (p *sentinelProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// query runs f against the sentinel.
func (p *sentinelProc) query(f func(context.Context, *redis.Client) (string, error)) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: p.addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return f(ctx, c)
}

// start writes the sentinel's configuration (the sentinel rewrites it as it
// learns) and runs it on a free port, retrying with another port when the
// picked one was taken meanwhile.
func (p *sentinelProc) start(masterPort string) error {
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		p.port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		conf := filepath.Join(p.dir, "sentinel.conf")
		lines := []string{
			"port " + strconv.Itoa(p.port),
			"bind 127.0.0.1",
			"daemonize no",
			"dir " + p.dir,
			"logfile " + filepath.Join(p.dir, "sentinel.log"),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 2", faultSentinelMaster, masterPort),
			fmt.Sprintf("sentinel down-after-milliseconds %s 1000", faultSentinelMaster),
			fmt.Sprintf("sentinel failover-timeout %s 10000", faultSentinelMaster),
			fmt.Sprintf("sentinel parallel-syncs %s 1", faultSentinelMaster),
			"",
		}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			return err
		}
		err = p.run(conf)
		if err == nil || attempt == 5 || !strings.Contains(p.logTail(50), "Address already in use") {
			return err
		}
	}
}

func (p *sentinelProc) run(conf string) error {
	cmd := exec.Command(p.bin, conf)
	cmd.Dir = p.dir
	out, err := os.Create(filepath.Join(p.dir, "sentinel.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-sentinel exited during startup: %s", cmd.ProcessState)
		default:
		}
		_, err := p.query(func(ctx context.Context, c *redis.Client) (string, error) {
			info, err := c.Info(ctx, "server").Result()
			if err == nil && !strings.Contains(info, "process_id:"+strconv.Itoa(cmd.Process.Pid)) {
				err = errors.New("another process answers on the port")
			}
			return "", err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("no answer within 10s: %v", err)
		}
		faultHold(20 * time.Millisecond)
	}
}

// stop SIGTERMs the sentinel (SIGKILL after 10 s) and reaps it.
func (p *sentinelProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

func (p *sentinelProc) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "sentinel.log"))
	o, _ := os.ReadFile(filepath.Join(p.dir, "sentinel.out"))
	return tailText(string(b)+string(o), n)
}

// ---------------------------------------------------------------------------
// sentinel-failover

// TestFaultSentinelFailover: consumers and the publisher reach Redis through
// Sentinel (redis.NewFailoverClient); the master is SIGKILLed mid-stream and
// the sentinels promote the replica. Replication is asynchronous, so
// entries the old master acknowledged (Publish returned their id) may never
// have reached the replica: those, when not handled before the failover,
// are excused, found by comparing the ledger with the new master's stream.
// Every other id must be handled; duplicates (acknowledgements the replica
// never saw) are reported. The replication link stalls for 300 ms just
// before the kill, so that such unreplicated writes happen in every run.
func TestFaultSentinelFailover(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 1000 * scale
	s := startFaultSentinel(t)
	stream := "faults:sentinel"
	led := newFaultLedger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		c := newTestConsumer(t, s.client(t), anyTaskRegistry, recordingHandler(led, name, 0, 3*time.Millisecond), faultConfig(stream, name, faultLogger(t, name)))
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}
	pub := &faultPublisher{rdb: s.client(t), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "sentinel"}
	pubDone := pub.run(ctx, n, float64(n)/6)
	defer func() { cancel(); <-pubDone }()

	require.True(t, waitProgress(faultWait(n), func() bool { return pub.done.Load() >= int64(n*2/5) }), "publishing stalled")
	// Stall the replication link for a moment before the kill, so that
	// the master acknowledges writes it never replicates, as with a
	// lagging replica; the kill then drops what the link holds.
	s.link.SetStall(true)
	faultHold(300 * time.Millisecond)
	killedAt := time.Now()
	s.master.Kill()
	s.link.SetRefuse(true)
	s.link.CutAll()
	s.link.SetStall(false)
	require.NoError(t, s.waitPromoted(s.replica.Addr(), 60*time.Second), "failover%s", s.logTails(30))
	t.Logf("master SIGKILLed after %d publishes; %s promoted %v later", n*2/5, s.replica.Addr(), time.Since(killedAt).Round(time.Millisecond))
	<-pubDone

	// What the new master has: entry id -> operation id.
	newMaster := faultClient(t, s.replica.Addr(), nil)
	onNew := map[string]string{}
	msgs, err := newMaster.XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	for _, m := range msgs {
		var msg Message
		if d, ok := m.Values[DataField].(string); ok && decodeMessage([]byte(d), &msg) == nil {
			onNew[m.ID] = msg.OperationID
		}
	}
	unreplicated := 0
	for _, r := range led.records() {
		if onNew[r.entryID] != r.key {
			unreplicated++
		}
	}
	// Only entries published around the kill may be missing.
	settle2 := waitProgress(faultWait(n), func() bool {
		for _, r := range led.records() {
			if onNew[r.entryID] == r.key && led.handledCount(r.key) == 0 {
				return false
			}
		}
		return pendingOf(newMaster, stream, "g") == 0
	})
	if !settle2 {
		t.Errorf("not settled: entries on the new master unhandled, or pending (%d)", pendingOf(newMaster, stream, "g"))
	}
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	t.Logf("published %d ids; %d acknowledged by the old master are missing on the new one; publish attempts failed: %d",
		led.count(), unreplicated, pub.failures.Load())
	res := finishScenario(t, newMaster, consumers[0], "sentinel-failover", led, 1, func(r *ledgerRec, handled bool, _ int) string {
		if !handled && onNew[r.entryID] != r.key {
			return "acknowledged by the old master, never replicated"
		}
		return ""
	})
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
	assert.LessOrEqual(t, res.excused, unreplicated)
}
