//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/internal/ssetest"
)

// buildOnce builds the example's binary once per test binary.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

// binary returns the path of the example built from this directory.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apiserver-test-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "apiserver")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", buildOnce.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildOnce.err)
	return buildOnce.path
}

// pod is one apiserver process.
type pod struct {
	t    *testing.T
	name string
	addr string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// startPod starts an apiserver on a free port against redisAddr and waits
// until its /healthz answers 200. It is killed when the test ends.
func startPod(t *testing.T, name, redisAddr string, args ...string) *pod {
	t.Helper()
	p := &pod{t: t, name: name, addr: freeAddr(t), env: append(os.Environ(), "REDIS_ADDR="+redisAddr),
		log: filepath.Join(t.TempDir(), name+".log")}
	p.args = append([]string{"-addr", p.addr}, args...)
	t.Cleanup(p.kill)
	p.start()
	return p
}

func (p *pod) url() string { return "http://" + p.addr }

// start runs the process and waits until it is healthy.
func (p *pod) start() {
	p.t.Helper()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(p.t, err)
	defer out.Close()
	cmd := exec.Command(binary(p.t), p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	require.NoError(p.t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	require.Eventually(p.t, func() bool {
		resp, err := http.Get(p.url() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "pod %s healthy (log: %s)", p.name, p.log)
}

// kill SIGKILLs the process and reaps it.
func (p *pod) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// watcher follows one task's event stream like a browser: on a lost
// connection it reconnects, to the next pod of its list, with
// Last-Event-ID.
type watcher struct {
	taskID, user string
	pods         []*pod

	events     []ssetest.Frame // as received, duplicates included
	resumed    int             // reconnects that carried a Last-Event-ID
	reconnects int
	err        error
}

func (w *watcher) run(ctx context.Context) {
	client := &http.Client{}
	last := ""
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			w.err = ctx.Err()
			return
		}
		p := w.pods[i%len(w.pods)]
		if i > 0 {
			w.reconnects++
			if last != "" {
				w.resumed++
			}
			time.Sleep(50 * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url()+"/tasks/"+w.taskID+"/events?user="+w.user, nil)
		if err != nil {
			w.err = err
			return
		}
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := client.Do(req)
		if err != nil {
			continue // the pod is down: the next one
		}
		if resp.StatusCode == http.StatusNoContent {
			resp.Body.Close()
			return // finished before
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			continue
		}
		finished := false
		_ = ssetest.Read(resp.Body, func(f ssetest.Frame) bool {
			if f.ID == "" {
				return true
			}
			w.events = append(w.events, f)
			last = f.ID
			var ev struct{ Type string }
			finished = json.Unmarshal([]byte(f.Data), &ev) == nil && ev.Type == "finish"
			return !finished
		})
		resp.Body.Close()
		if finished {
			return
		}
	}
}

// Three pods on one Redis: tasks start on pod A, each is watched on pod B
// or C, and pod B is SIGKILLed mid-run; its watchers reconnect to C with
// Last-Event-ID. Every watcher sees every event of its task's stream once
// (by event id), none lost, and no task gets two outcomes. The completions
// B's consumer held are taken over by another pod after -claim-min-idle.
func TestPodsKilledMidRunLoseNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	args := []string{"-claim-min-idle", "2s", "-op-min", "300ms", "-op-max", "4s", "-retry", "200ms"}
	a := startPod(t, "a", srv.Addr(), args...)
	b := startPod(t, "b", srv.Addr(), args...)
	c := startPod(t, "c", srv.Addr(), args...)

	const tasks = 30
	watchers := make([]*watcher, tasks)
	for i := range watchers {
		taskID, _ := startTask(t, a.url(), fmt.Sprintf("s-%d", i), "u-1")
		w := &watcher{taskID: taskID, user: "u-1", pods: []*pod{b, c}}
		if i%2 == 1 {
			w.pods = []*pod{c, b}
		}
		watchers[i] = w
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var finished atomic.Int32
	for _, w := range watchers {
		wg.Go(func() { w.run(ctx); finished.Add(1) })
	}
	require.Eventually(t, func() bool { return finished.Load() >= tasks/4 }, 60*time.Second, 10*time.Millisecond)
	b.kill()
	t.Logf("pod b killed after %d of %d watchers finished", finished.Load(), tasks)
	wg.Wait()

	rdb := srv.Client(t)
	resumed := 0
	for _, w := range watchers {
		require.NoError(t, w.err, "task %s", w.taskID)
		resumed += w.resumed
		msgs, err := rdb.XRange(context.Background(), "chat:stream:"+w.taskID, "-", "+").Result()
		require.NoError(t, err)
		var want, got []string
		for _, m := range msgs {
			want = append(want, m.ID+" "+m.Values["data"].(string))
		}
		seen := map[string]int{}
		outcomes := 0
		for _, f := range w.events {
			seen[f.ID]++
			if seen[f.ID] == 1 {
				got = append(got, f.ID+" "+f.Data)
			}
			var ev struct{ Type string }
			require.NoError(t, json.Unmarshal([]byte(f.Data), &ev))
			if seen[f.ID] == 1 && (ev.Type == "tool-output-available" || ev.Type == "error") {
				outcomes++
			}
		}
		assert.Equal(t, want, got, "task %s: every event of the stream, once, in order", w.taskID)
		assert.Equal(t, 1, outcomes, "task %s: one outcome", w.taskID)
		assert.Len(t, w.events, len(got), "task %s: nothing received twice", w.taskID)
		status, err := rdb.HGet(context.Background(), "chat:task:meta:"+w.taskID, "status").Result()
		require.NoError(t, err)
		assert.Contains(t, []string{"completed", "failed"}, status)
	}
	t.Logf("%d watchers resumed on another pod with Last-Event-ID", resumed)
	assert.Positive(t, resumed, "the kill caught watchers mid-stream")
	dead, err := rdb.XLen(context.Background(), completionStream+":dead").Result()
	require.NoError(t, err)
	assert.Zero(t, dead, "no completion dead-lettered")
}
