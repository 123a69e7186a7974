// Package redistest spawns real redis-server processes for tests and lets a
// test inject faults into them: crash (Kill), restart on the same port and
// data directory (Restart), graceful stop (Shutdown), freeze (Pause/Resume),
// and cut or refuse TCP connections through a loopback Proxy.
//
// Every server is started with exec.Command (no shell) on a free loopback port,
// keeps its data and log in a t.TempDir(), and is stopped by its own pid in
// t.Cleanup, which always reaps the process. Nothing here ever talks to a
// Redis it did not start, except that Addr returns REDIS_ADDR when it is set.
//
// When no redis-server binary can be found, Start skips the test, or fails it
// when the CI environment variable is set (install it with
// `apt-get install redis-server`).
//
// The package needs a Unix-like system (it uses SIGSTOP and SIGCONT).
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	// startTimeout bounds how long Start and Restart wait for PING to answer.
	startTimeout = 10 * time.Second
	// stopGrace is how long a SIGTERM'd server gets before it is SIGKILLed.
	stopGrace = 10 * time.Second
	// bindRetries is how many fresh ports Start tries when the picked port
	// turned out to be taken (only when Options.Port is 0).
	bindRetries = 5
	// logFile is the name of the server's log file inside Dir.
	logFile = "redis.log"
	// outFile receives the server's stdout and stderr (errors printed before
	// the log file is opened, such as a bad argument).
	outFile = "redis.out"
)

// Options configures a server started by Start.
type Options struct {
	// AppendOnly turns on "appendonly yes" with "appendfsync always", so that
	// every acknowledged write survives Kill followed by Restart.
	AppendOnly bool
	// Args are extra redis-server arguments passed through unchanged after
	// the defaults, in "--name value" form, e.g.
	// []string{"--requirepass", "secret"}. A later argument overrides an
	// earlier one, so Args can also override the defaults, except --port,
	// --bind, --dir and --logfile, which this package relies on.
	Args []string
	// Port is the TCP port to listen on, on 127.0.0.1. 0 picks a free port
	// (and Start retries with another one if it was taken meanwhile).
	Port int
}

// Binary returns the path of the redis-server executable: the one on PATH,
// otherwise /usr/bin/redis-server or /usr/local/bin/redis-server. It returns
// an error when none is found.
func Binary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/local/bin/redis-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("redistest: redis-server not found on PATH, in /usr/bin or in /usr/local/bin")
}

// Addr returns a Redis address for tests that only need "a real Redis" and
// inject no faults: the value of REDIS_ADDR when it is set and not empty,
// otherwise the address of a fresh server from Start(t, Options{}).
//
// A server named by REDIS_ADDR may be shared: tests must not FLUSHALL it or
// shut it down, and should use keys of their own.
func Addr(t testing.TB) string {
	t.Helper()
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	return Start(t, Options{}).Addr()
}

// Server is a redis-server process owned by one test. It is stopped and
// reaped in t.Cleanup. Its methods are safe for concurrent use, also
// concurrently with the cleanup; once the cleanup has run they do nothing.
//
// Methods that can fail (Start, Restart) report through the testing.TB with
// Fatalf, so, like require, they must be called from the test's goroutine.
type Server struct {
	t       testing.TB // nil for a server started by Launch
	ownsDir bool       // Close removes dir (Launch)
	bin     string
	dir     string
	args    []string // fixed arguments except the port

	port int // fixed once Start returns

	mu     sync.Mutex
	cmd    *exec.Cmd     // current process, nil when not running
	done   chan struct{} // closed when cmd has been reaped
	paused bool
	closed bool // set by the cleanup; no further process is started
}

// Start spawns a redis-server for t and waits (up to 10 s) until it answers
// PING. The server listens on 127.0.0.1 only, keeps its data and its log in a
// new t.TempDir(), and is stopped in t.Cleanup: resumed if paused, sent
// SIGTERM, SIGKILLed if still alive after a grace period, and reaped.
//
// When no redis-server binary is found, Start calls t.Skipf, or t.Fatalf when
// the CI environment variable is set.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redistest: %v; CI must provide it: run `apt-get update && apt-get install -y redis-server` (see .ci/run)", err)
		}
		t.Skipf("redistest: %v; install it (e.g. `apt-get install redis-server`) to run this test", err)
	}

	// TempDir first: cleanups run last-in first-out, so the server is
	// stopped before its directory is removed.
	s := newServer(bin, t.TempDir(), opts)
	s.t = t
	t.Cleanup(s.cleanup)
	if err := s.start(opts.Port); err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

// Launch starts a server that no single test owns, for a TestMain that
// shares one server among its tests. It works like Start, but reports
// failures as errors (errors.Is(err, ErrNoBinary) when redis-server is
// missing), keeps its files in a new temporary directory, and must be
// stopped with Close. Restart on a launched server panics on failure.
func Launch(opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBinary, err)
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	s := newServer(bin, dir, opts)
	s.ownsDir = true
	if err := s.start(opts.Port); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ErrNoBinary is returned by Launch when no redis-server binary is found.
var ErrNoBinary = errors.New("redistest: redis-server not found")

// Close stops a server started by Launch for good and removes its
// directory. It is idempotent.
func (s *Server) Close() {
	s.cleanup()
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

func newServer(bin, dir string, opts Options) *Server {
	s := &Server{bin: bin, dir: dir}
	aof := "no"
	if opts.AppendOnly {
		aof = "yes"
	}
	s.args = []string{
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", aof,
		"--appendfsync", "always",
		"--logfile", filepath.Join(dir, logFile),
		"--daemonize", "no",
	}
	s.args = append(s.args, opts.Args...)
	return s
}

// start starts the process on port, or on a free port (retrying when it was
// taken meanwhile) when port is 0.
func (s *Server) start(port int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tries := 1
	if port == 0 {
		tries = bindRetries
	}
	for i := 1; ; i++ {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(); err != nil {
				return fmt.Errorf("redistest: pick a free port: %v", err)
			}
		} else {
			reservePort(p)
		}
		s.port = p
		err := s.startLocked()
		if err == nil {
			return nil
		}
		if i < tries && errors.Is(err, errPortTaken) {
			continue
		}
		return fmt.Errorf("redistest: start redis-server on port %d: %v\n--- log tail ---\n%s", p, err, s.logTail(30))
	}
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same
// across Restart.
func (s *Server) Addr() string {
	// s.port is only written by Start, before s is returned.
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Pid returns the process id of the running server, or 0 when it is not
// running (after Kill or Shutdown and before Restart).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Dir returns the server's working directory, a t.TempDir() holding its data
// files and its log.
func (s *Server) Dir() string { return s.dir }

// Kill crashes the server: SIGKILL, then waits until the process is reaped.
// Data survives a later Restart only with Options.AppendOnly. It does nothing
// when the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Shutdown stops the server gracefully: SIGTERM (after SIGCONT if paused),
// then waits until the process has exited and been reaped, sending SIGKILL
// if it takes longer than a grace period. It does nothing when the server is
// not running.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart starts the server again on the same port and directory and waits
// (up to 10 s) until it answers PING, loading its append-only file if it has
// one. It is meant to follow Kill or Shutdown; a running server is shut down
// gracefully first. Restart fails the test with t.Fatalf when the server does
// not come back, e.g. because another process took its port meanwhile. After
// the test's cleanup has run it does nothing.
func (s *Server) Restart() {
	if s.t != nil {
		s.t.Helper()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.stopLocked()
	if err := s.startLocked(); err != nil {
		if s.t == nil {
			panic(fmt.Sprintf("redistest: restart redis-server on port %d: %v", s.port, err))
		}
		s.t.Fatalf("redistest: restart redis-server on port %d: %v\n--- log tail ---\n%s", s.port, err, s.logTail(30))
	}
}

// Pause freezes the server with SIGSTOP: it keeps accepting TCP connections
// (in the kernel backlog) but answers nothing until Resume. It does nothing
// when the server is not running. The cleanup resumes a paused server before
// stopping it.
func (s *Server) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running() && !s.paused {
		if s.cmd.Process.Signal(syscall.SIGSTOP) == nil {
			s.paused = true
		}
	}
}

// Resume continues a server frozen by Pause (SIGCONT). It does nothing when
// the server is not running.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumeLocked()
}

// Client returns a go-redis client connected to the server, closed in
// t.Cleanup. It uses the library's defaults, except that maintenance
// notifications are disabled.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                     s.Addr(),
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// LogTail returns the last n lines of the server's log (redis.log in Dir),
// followed by anything it printed on stdout or stderr.
func (s *Server) LogTail(n int) string {
	return s.logTail(n)
}

// errPortTaken reports that redis-server could not bind its port.
var errPortTaken = errors.New("port already in use")

// running reports whether a process is running. s.mu must be held.
func (s *Server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// startLocked spawns a process on s.port and waits for it to answer PING.
// On failure the process is killed and reaped. s.mu must be held.
func (s *Server) startLocked() error {
	out, err := os.OpenFile(filepath.Join(s.dir, outFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy

	logStart := fileSize(filepath.Join(s.dir, logFile))
	args := append([]string{"--port", strconv.Itoa(s.port)}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reaps the process
		close(done)
	}()
	s.cmd, s.done, s.paused = cmd, done, false

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for {
		select {
		case <-done:
			s.cmd = nil
			if bytes.Contains(readFrom(filepath.Join(s.dir, logFile), logStart), []byte("Address already in use")) {
				return fmt.Errorf("redis-server exited: %w (%s)", errPortTaken, cmd.ProcessState)
			}
			return fmt.Errorf("redis-server exited during startup: %s", cmd.ProcessState)
		default:
		}
		up, err := pingPid(addr, cmd.Process.Pid)
		if up == upYes {
			return nil
		}
		if up == upAuth {
			// The server wants a password, so INFO cannot tell whose it
			// is. Our process logging that it is ready proves it holds
			// the port, so the answer came from it.
			if bytes.Contains(readFrom(filepath.Join(s.dir, logFile), logStart), []byte(readyLine)) {
				return nil
			}
			err = errors.New("answered with an authentication error but has not logged " + strconv.Quote(readyLine))
		}
		lastErr = err
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("no PONG within %v (last error: %v)", startTimeout, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killLocked SIGKILLs the running process and waits until it is reaped.
// s.mu must be held.
func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL) // kills a stopped process too
	<-s.done
	s.cmd, s.paused = nil, false
}

// stopLocked resumes, SIGTERMs and reaps the running process, SIGKILLing it
// after stopGrace. s.mu must be held.
func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	s.resumeLocked()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
	s.cmd, s.paused = nil, false
}

// resumeLocked sends SIGCONT to a paused process. s.mu must be held.
func (s *Server) resumeLocked() {
	if s.paused && s.running() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
	s.paused = false
}

// cleanup stops the server for good; registered with t.Cleanup.
func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.stopLocked()
}

func (s *Server) logTail(n int) string {
	var b strings.Builder
	b.WriteString(tailLines(readFrom(filepath.Join(s.dir, logFile), 0), n))
	if o := bytes.TrimSpace(readFrom(filepath.Join(s.dir, outFile), 0)); len(o) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString("--- stdout/stderr ---\n")
		b.WriteString(tailLines(o, n))
	}
	return b.String()
}

// readyLine is what redis-server logs once it listens and has loaded its data.
const readyLine = "Ready to accept connections"

// upState is the result of pingPid.
type upState int

const (
	upNo   upState = iota // not answering (yet), or not our process
	upYes                 // answers PING, and INFO says it is our process
	upAuth                // answers, but only with an authentication error
)

// pingPid reports whether the Redis at addr answers PING and is the process
// pid, so that a server that lost the race for its port is not mistaken for
// whoever won it. A server that requires a password answers PING with an
// error; pingPid then returns upAuth and the caller must check otherwise
// that the server is its own. A server still loading its data answers
// -LOADING, which is upNo.
func pingPid(addr string, pid int) (upState, error) {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return upNo, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return upNo, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return upNo, err
	}
	line = strings.TrimSpace(line)
	switch {
	case line == "+PONG":
	case strings.HasPrefix(line, "-NOAUTH"), strings.HasPrefix(line, "-NOPERM"), strings.HasPrefix(line, "-WRONGPASS"):
		return upAuth, nil
	default:
		return upNo, fmt.Errorf("PING answered %q", line)
	}
	if _, err := c.Write([]byte("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")); err != nil {
		return upNo, err
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return upNo, err
	}
	if !strings.HasPrefix(line, "$") {
		return upAuth, nil // INFO not allowed (e.g. ACL): treat like a password
	}
	size, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || size < 0 {
		return upNo, fmt.Errorf("bad INFO reply %q", line)
	}
	body := make([]byte, size+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return upNo, err
	}
	want := "process_id:" + strconv.Itoa(pid)
	for _, l := range strings.Split(string(body), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "process_id:") {
			if l == want {
				return upYes, nil
			}
			return upNo, fmt.Errorf("another process answers on %s (%s, want %s)", addr, l, want)
		}
	}
	return upAuth, nil // no process_id in INFO: cannot tell
}

// reserved holds every port handed to a server in this test binary. freePort
// never returns one of them again, so parallel tests do not pick the same
// port, and the port of a killed server stays its own for Restart.
var reserved = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// reservePort marks port as used by a server of this test binary.
func reservePort(port int) {
	reserved.Lock()
	defer reserved.Unlock()
	reserved.ports[port] = true
}

// freePort returns a loopback TCP port that was free a moment ago and that
// no server of this test binary has used, and reserves it.
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		reserved.Lock()
		taken := reserved.ports[port]
		reserved.ports[port] = true
		reserved.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("no unreserved free port found")
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the contents of path from byte offset off (nil on error).
func readFrom(path string, off int64) []byte {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return nil
	}
	return b[off:]
}

func tailLines(b []byte, n int) string {
	if n <= 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
