package redistest

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
)

// SentinelMaster is the name under which the sentinels of StartSentinel
// monitor the master.
const SentinelMaster = "mymaster"

const (
	// sentinelDownAfter is down-after-milliseconds: how long the master may
	// be unreachable before a sentinel flags it as down.
	sentinelDownAfter = 1000
	// sentinelFormTimeout bounds how long StartSentinel waits for the
	// sentinels to know the master, the replica and each other, and how
	// long Failover waits for the new master.
	sentinelFormTimeout = 30 * time.Second
	// sentinelLog is the name of a sentinel's log file inside its directory.
	sentinelLog = "sentinel.log"
	// sentinelFormPoll is how often StartSentinel and Failover ask whether
	// the deployment has settled; sentinelMasterPoll is how often
	// WaitMaster asks whether the promotion is done.
	sentinelFormPoll   = 50 * time.Millisecond
	sentinelMasterPoll = 20 * time.Millisecond
)

// Sentinel is a Redis Sentinel deployment owned by one test: a master and
// one replica (each a [Server], without persistence), and three
// redis-sentinel processes monitoring them under [SentinelMaster] with a
// quorum of 2, each on a free loopback port with its configuration and log
// in a directory of its own. Everything is stopped by its own pid and
// reaped in t.Cleanup, the sentinels first.
type Sentinel struct {
	servers   []*Server // the master as started, then the replica
	link      *Proxy    // the replica's replication link, with ProxyReplication
	sentinels []*sentinelProc
}

// SentinelOptions configures the deployment [StartSentinelWith] starts.
// The zero value is the one [StartSentinel] starts.
type SentinelOptions struct {
	// ProxyReplication makes the replica replicate through a [Proxy] to the
	// master (see [Sentinel.ReplicationLink]), so that a test can stall the
	// link and refuse or cut it, and have the master acknowledge writes its
	// replica never receives. Only the replication link goes through it:
	// clients and sentinels reach both servers directly. The sentinels point
	// a replica that replicates from another address than the master's at
	// the master itself (+fix-slave-config) once the failover timeout (10 s)
	// has passed since they found it, so the link carries the replication
	// only until some 8 s after StartSentinelWith returns; a replica
	// reconfigured by a failover does not use it either. Default false: the
	// replica connects to the master directly.
	ProxyReplication bool
}

// sentinelProc is one redis-sentinel process.
type sentinelProc struct {
	bin, dir, conf string
	port           int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// SentinelBinary returns the path of the redis-sentinel executable (Debian's
// redis-sentinel package): the one on PATH, otherwise /usr/bin/redis-sentinel
// or /usr/local/bin/redis-sentinel.
func SentinelBinary() (string, error) {
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-sentinel", "/usr/local/bin/redis-sentinel"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("redistest: redis-sentinel not found on PATH, in /usr/bin or in /usr/local/bin")
}

// StartSentinel starts a master, a replica of it and three sentinels, and
// waits (up to 30 s) until the replica is in sync and every sentinel knows
// the master, the replica and the two other sentinels, so that a failover
// can be agreed on.
//
// When redis-server or redis-sentinel is missing it skips the test, or
// fails it when the CI environment variable is set (install them with
// `apt-get install redis-server redis-sentinel`).
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return StartSentinelWith(t, SentinelOptions{})
}

// StartSentinelWith is [StartSentinel] with options: it starts the
// deployment opts describes and waits, skips or fails as StartSentinel does.
func StartSentinelWith(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	bin, err := SentinelBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI must provide it: run `apt-get update && apt-get install -y redis-sentinel` (see .ci/run)", err)
		}
		t.Skipf("%v; install it (e.g. `apt-get install redis-sentinel`) to run this test", err)
	}
	fastSync := []string{"--repl-diskless-sync-delay", "0"}
	master := Start(t, Options{Args: fastSync})
	s := &Sentinel{}
	upstream := master.Addr()
	if opts.ProxyReplication {
		s.link = NewProxy(t, master.Addr())
		upstream = s.link.Addr()
	}
	host, port, _ := net.SplitHostPort(upstream)
	replica := Start(t, Options{Args: append(fastSync, "--replicaof", host, port)})
	s.servers = []*Server{master, replica}
	for range 3 {
		p := &sentinelProc{bin: bin, dir: t.TempDir()}
		t.Cleanup(p.stop) // after TempDir's: the process stops before its directory goes
		if err := p.start(master.port); err != nil {
			t.Fatalf("redistest: start redis-sentinel: %v\n--- log tail ---\n%s", err, p.logTail(20))
		}
		s.sentinels = append(s.sentinels, p)
	}
	if err := s.waitFormed(master.Addr(), true, sentinelFormTimeout); err != nil {
		t.Fatalf("redistest: sentinels did not settle: %v%s", err, s.logTails(20))
	}
	return s
}

// Addrs returns the sentinels' addresses, "127.0.0.1:port".
func (s *Sentinel) Addrs() []string {
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.addr()
	}
	return out
}

// Servers returns the two data servers: the master as started, then the
// replica. After a Failover the roles are swapped; MasterAddr says which is
// the master now. Kill, Restart, Pause and Resume work on them as on any
// Server.
func (s *Sentinel) Servers() []*Server { return []*Server{s.servers[0], s.servers[1]} }

// ReplicationLink returns the proxy the replica replicates from the master
// through, with [SentinelOptions.ProxyReplication]; otherwise nil. Stall it
// (SetStall) to make the replica lag; SetRefuse and CutAll keep it from
// catching up, for example before killing the master.
func (s *Sentinel) ReplicationLink() *Proxy { return s.link }

// MasterAddr returns the master's address as the first sentinel that
// answers reports it.
func (s *Sentinel) MasterAddr(t testing.TB) string {
	t.Helper()
	addr, err := s.masterAddr()
	if err != nil {
		t.Fatalf("redistest: ask the sentinels for the master: %v", err)
	}
	return addr
}

// Client returns a Sentinel failover client (redis.NewFailoverClient) for
// the master, closed in t.Cleanup.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    SentinelMaster,
		SentinelAddrs: s.Addrs(),
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Failover makes the sentinels promote the replica (SENTINEL FAILOVER,
// which needs no agreement) and waits (up to 30 s) until every sentinel
// names the new master and the new master reports role:master. Writes the
// replica had not received are lost, as in a real failover. The old master
// rejoins as a replica of the new one some seconds later (when a sentinel
// next looks at it); a second Failover first waits for that.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	old, err := s.masterAddr()
	if err != nil {
		t.Fatalf("redistest: failover: %v", err)
	}
	if err := s.waitFormed(old, true, sentinelFormTimeout); err != nil {
		t.Fatalf("redistest: failover: the replica is not ready: %v%s", err, s.logTails(20))
	}
	if err := withNodeClient(s.sentinels[0].addr(), func(c *redis.Client) error {
		return c.Do(context.Background(), "SENTINEL", "FAILOVER", SentinelMaster).Err()
	}); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	var next string
	for _, srv := range s.servers {
		if srv.Addr() != old {
			next = srv.Addr()
		}
	}
	if err := s.waitFormed(next, false, sentinelFormTimeout); err != nil {
		t.Fatalf("redistest: failover from %s to %s: %v%s", old, next, err, s.logTails(20))
	}
}

// WaitMaster waits (up to timeout) until every sentinel names addr as the
// master and addr reports role:master, and fails the test, with the tails
// of the sentinels' and servers' logs, when that does not happen. Unlike
// Failover it starts nothing: it waits for a failover the test brought
// about, by killing the master for example.
func (s *Sentinel) WaitMaster(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	err := poll(timeout, sentinelMasterPoll, func() error { return s.checkMaster(addr, false, false) })
	if err != nil {
		t.Fatalf("redistest: %s not promoted within %v: %v%s", addr, timeout, err, s.logTails(30))
	}
}

// waitFormed waits until every sentinel names master as the master and
// knows one replica and two other sentinels, and master says role:master
// (and, with synced, that its replica is in sync).
func (s *Sentinel) waitFormed(master string, synced bool, d time.Duration) error {
	return poll(d, sentinelFormPoll, func() error { return s.checkMaster(master, true, synced) })
}

// poll calls check every interval until it returns nil or d has passed,
// and returns what check returned last.
func poll(d, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// checkMaster returns what is not yet so of: every sentinel names master as
// the master (and, with peers, knows one replica and the other sentinels),
// and master says role:master (and, with synced, that its replica is in
// sync).
func (s *Sentinel) checkMaster(master string, peers, synced bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, p := range s.sentinels {
		err := withNodeClient(p.addr(), func(c *redis.Client) error {
			addr, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
			if err != nil {
				return err
			}
			if len(addr) != 2 {
				return fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME returned %q", p.addr(), addr)
			}
			if got := net.JoinHostPort(addr[0], addr[1]); got != master {
				return fmt.Errorf("sentinel %s names %s as the master, want %s", p.addr(), got, master)
			}
			if !peers {
				return nil
			}
			replicas, err := c.Do(ctx, "SENTINEL", "REPLICAS", SentinelMaster).Slice()
			if err != nil {
				return err
			}
			others, err := c.Do(ctx, "SENTINEL", "SENTINELS", SentinelMaster).Slice()
			if err != nil {
				return err
			}
			if len(replicas) != 1 || len(others) != len(s.sentinels)-1 {
				return fmt.Errorf("sentinel %s knows %d replicas and %d other sentinels", p.addr(), len(replicas), len(others))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return withNodeClient(master, func(c *redis.Client) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		f := infoFields(info)
		if f["role"] != "master" || synced && (f["connected_slaves"] != "1" || !strings.Contains(f["slave0"], "state=online")) {
			return fmt.Errorf("master %s: role %s, %s replicas (%s)", master, f["role"], f["connected_slaves"], f["slave0"])
		}
		return nil
	})
}

func (s *Sentinel) masterAddr() (string, error) {
	var lastErr error
	for _, p := range s.sentinels {
		var addr []string
		err := withNodeClient(p.addr(), func(c *redis.Client) error {
			var err error
			addr, err = c.Do(context.Background(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
			return err
		})
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("no sentinel answered: %v", lastErr)
}

func (s *Sentinel) logTails(n int) string {
	var b strings.Builder
	for i, p := range s.sentinels {
		fmt.Fprintf(&b, "\n--- sentinel %d (%s) ---\n%s", i, p.addr(), p.logTail(n))
	}
	for i, srv := range s.servers {
		fmt.Fprintf(&b, "\n--- server %d (%s) ---\n%s", i, srv.Addr(), srv.logTail(n))
	}
	return b.String()
}

func (p *sentinelProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// start writes the sentinel's configuration (which the sentinel rewrites as
// it learns) and starts it on a free port, monitoring the master on
// masterPort; it waits until the process answers PING.
func (p *sentinelProc) start(masterPort int) error {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		p.port = port
		p.conf = filepath.Join(p.dir, "sentinel.conf")
		conf := strings.Join([]string{
			"port " + strconv.Itoa(port),
			"bind 127.0.0.1",
			"daemonize no",
			"dir " + p.dir,
			"logfile " + filepath.Join(p.dir, sentinelLog),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", SentinelMaster, masterPort),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", SentinelMaster, sentinelDownAfter),
			fmt.Sprintf("sentinel failover-timeout %s 10000", SentinelMaster),
			fmt.Sprintf("sentinel parallel-syncs %s 1", SentinelMaster),
			"",
		}, "\n")
		if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
			return err
		}
		err = p.run()
		if err == nil || attempt == bindRetries || !errors.Is(err, errPortTaken) {
			return err
		}
	}
}

func (p *sentinelProc) run() error {
	out, err := os.OpenFile(filepath.Join(p.dir, outFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	logStart := fileSize(filepath.Join(p.dir, sentinelLog))
	cmd := exec.Command(p.bin, p.conf)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			if strings.Contains(string(readFrom(filepath.Join(p.dir, sentinelLog), logStart)), "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("redis-sentinel exited during startup: %s", cmd.ProcessState)
		default:
		}
		up, err := pingPid(p.addr(), cmd.Process.Pid)
		if up == upYes {
			return nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("no PONG within %v (last error: %v)", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits for the process to exit (SIGKILL after a grace
// period) and reaps it. It is idempotent.
func (p *sentinelProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

func (p *sentinelProc) logTail(n int) string {
	return tailLines(readFrom(filepath.Join(p.dir, sentinelLog), 0), n)
}
