package browsertest

// The examples' browser tests run the example as a program of its own, as
// it runs in production, so that it can be killed and started again while
// the page stays open.

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build builds the main package pkg (a path relative to the module root
// dir, such as "./examples/apiserver") into a temporary directory and
// returns the binary's path.
func Build(t testing.TB, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("browsertest: go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Process is a server process a test runs, on a fixed loopback address, so
// that it can be killed and started again where its clients expect it.
type Process struct {
	t    testing.TB
	bin  string
	args []string
	env  []string
	// Addr is the process's listen address, "127.0.0.1:port".
	Addr string
	// Log is the file that receives its output.
	Log string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess runs bin with "-addr <Addr>" and args on a free loopback
// port, with env added to the environment, and waits (up to 30 s) until
// GET <healthPath> answers 200. The process is killed when the test ends.
func StartProcess(t testing.TB, bin string, env []string, healthPath string, args ...string) *Process {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, bin: bin, Addr: l.Addr().String(), env: append(os.Environ(), env...)}
	_ = l.Close()
	p.args = append([]string{"-addr", p.Addr}, args...)
	p.Log = filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	t.Cleanup(p.Kill)
	p.Start(healthPath)
	return p
}

// URL returns "http://" + Addr + path.
func (p *Process) URL(path string) string { return "http://" + p.Addr + path }

// Start starts the process (again) and waits until GET healthPath answers
// 200.
func (p *Process) Start(healthPath string) {
	p.t.Helper()
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("browsertest: start %s: %v", p.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL(healthPath))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(p.Log)
			p.t.Fatalf("browsertest: %s exited during startup:\n%s", p.bin, b)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("browsertest: %s not healthy within 30s (log %s)", p.bin, p.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs the process and waits until it is reaped. It does nothing
// when the process is not running.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}
