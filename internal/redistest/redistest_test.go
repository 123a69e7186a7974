package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

const (
	waitFor = 10 * time.Second
	tick    = 20 * time.Millisecond
)

// noRetryClient returns a client to addr that never retries and gives up
// reading after readTimeout, so that a fault shows up in the first command.
func noRetryClient(t *testing.T, addr string, readTimeout time.Duration) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		MaxRetries:   -1,
		DialTimeout:  2 * time.Second,
		ReadTimeout:  readTimeout,
		WriteTimeout: readTimeout,
		PoolSize:     1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawPing sends PING on c and returns the reply line.
func rawPing(c net.Conn, r *bufio.Reader) (string, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// processGone reports whether no process with this pid exists (it has
// exited and been reaped).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestStartPing(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})

	host, port, err := net.SplitHostPort(s.Addr())
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	require.NotEqual(t, "6379", port, "must never use the shared Redis port")
	require.Positive(t, s.Pid())
	require.DirExists(t, s.Dir())

	ctx := context.Background()
	c := s.Client(t)
	require.Equal(t, "PONG", c.Ping(ctx).Val())
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	require.Equal(t, "v", c.Get(ctx, "k").Val())

	info, err := c.Info(ctx, "server").Result()
	require.NoError(t, err)
	require.Contains(t, info, "process_id:"+strconv.Itoa(s.Pid()))

	require.FileExists(t, filepath.Join(s.Dir(), "redis.log"))
	require.Contains(t, s.LogTail(50), "Ready to accept connections")
	require.LessOrEqual(t, len(strings.Split(s.LogTail(2), "\n")), 2)
}

func TestKillRestartAppendOnlyKeepsData(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	addr, pid := s.Addr(), s.Pid()
	ctx := context.Background()
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "survivor", "yes", 0).Err())

	s.Kill()
	require.Zero(t, s.Pid())
	require.True(t, processGone(pid), "killed server must be reaped")
	require.Error(t, noRetryClient(t, addr, 5*time.Second).Ping(ctx).Err())

	s.Restart()
	require.Equal(t, addr, s.Addr(), "Restart keeps the port")
	require.NotEqual(t, pid, s.Pid())
	// The old pooled connection is dead; the client reconnects by itself.
	require.Eventually(t, func() bool { return c.Get(ctx, "survivor").Val() == "yes" }, waitFor, tick)
}

func TestKillRestartWithoutAppendOnlyLosesData(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "gone", "soon", 0).Err())

	s.Kill()
	s.Restart()
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, waitFor, tick)
	require.ErrorIs(t, c.Get(ctx, "gone").Err(), redis.Nil)
}

func TestShutdownRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	ctx := context.Background()
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	pid := s.Pid()

	s.Shutdown()
	require.Zero(t, s.Pid())
	require.True(t, processGone(pid))
	s.Shutdown() // no-op when stopped
	s.Kill()     // no-op when stopped
	s.Pause()    // no-op when stopped
	s.Resume()   // no-op when stopped

	s.Restart()
	require.Eventually(t, func() bool { return c.Get(ctx, "k").Val() == "v" }, waitFor, tick)

	// Restart of a running server stops it first.
	pid = s.Pid()
	s.Restart()
	require.True(t, processGone(pid))
	require.Eventually(t, func() bool { return c.Get(ctx, "k").Val() == "v" }, waitFor, tick)
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	c := noRetryClient(t, s.Addr(), 300*time.Millisecond)
	// Retried because a loaded machine can exceed the short timeout.
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, waitFor, tick)

	s.Pause()
	s.Pause() // idempotent
	err := c.Ping(ctx).Err()
	require.Error(t, err)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "want a timeout, got %v", err)

	s.Resume()
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, waitFor, tick)
}

func TestArgsPassThrough(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{Args: []string{"--requirepass", "secret"}})
	ctx := context.Background()

	err := noRetryClient(t, s.Addr(), 5*time.Second).Ping(ctx).Err()
	require.Error(t, err)
	require.Contains(t, err.Error(), "NOAUTH")

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: "secret"})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Ping(ctx).Err())
}

func TestExplicitPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())

	s := redistest.Start(t, redistest.Options{Port: port})
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(port), s.Addr())
	require.NoError(t, s.Client(t).Ping(context.Background()).Err())
}

func TestAddr(t *testing.T) {
	t.Setenv("REDIS_ADDR", "127.0.0.1:1")
	require.Equal(t, "127.0.0.1:1", redistest.Addr(t))

	t.Setenv("REDIS_ADDR", "")
	addr := redistest.Addr(t)
	require.NotEqual(t, "127.0.0.1:6379", addr)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err())
}

func TestBinary(t *testing.T) {
	bin, err := redistest.Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must have redis-server: %v", err)
		}
		t.Skip(err)
	}
	require.FileExists(t, bin)
}

func TestCleanupStopsPausedServer(t *testing.T) {
	var pid int
	t.Run("paused", func(t *testing.T) {
		s := redistest.Start(t, redistest.Options{})
		pid = s.Pid()
		s.Pause()
	})
	require.Positive(t, pid)
	require.True(t, processGone(pid), "cleanup must resume, stop and reap a paused server")
}

func TestFaultsConcurrentWithCleanup(t *testing.T) {
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		pids []int
	)
	t.Run("server", func(t *testing.T) {
		s := redistest.Start(t, redistest.Options{})
		pids = append(pids, s.Pid())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch i % 4 {
				case 0:
					s.Pause()
				case 1:
					s.Resume()
				case 2:
					s.Pause() // left paused half of the time
				case 3:
					_ = s.Pid()
					_ = s.Addr()
				}
				runtime.Gosched()
			}
		}()
		// Faults from the test goroutine race with the one above.
		s.Kill()
		s.Restart()
		pids = append(pids, s.Pid())
		s.Pause()
		// Returning runs the cleanup while the goroutine still signals.
	})
	close(stop)
	wg.Wait()
	for _, pid := range pids {
		require.True(t, processGone(pid), "pid %d must be stopped and reaped", pid)
	}
}

func TestProxyForwards(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	p := redistest.NewProxy(t, s.Addr())
	require.NotEqual(t, s.Addr(), p.Addr())

	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "via", "proxy", 0).Err())
	require.Equal(t, "proxy", s.Client(t).Get(ctx, "via").Val())
	require.Equal(t, "proxy", c.Get(ctx, "via").Val())
}

func TestProxyCutAll(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	p := redistest.NewProxy(t, s.Addr())
	ctx := context.Background()

	raw, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw.Close() })
	r := bufio.NewReader(raw)
	reply, err := rawPing(raw, r)
	require.NoError(t, err)
	require.Equal(t, "+PONG", reply)

	c := noRetryClient(t, p.Addr(), 5*time.Second)
	require.NoError(t, c.Ping(ctx).Err())

	require.GreaterOrEqual(t, p.CutAll(), 2)

	// The next command on the old connection fails...
	_, err = rawPing(raw, r)
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "a cut must not look like a hang: %v", err)

	// ...and a retry on a new connection works.
	raw2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw2.Close() })
	reply, err = rawPing(raw2, bufio.NewReader(raw2))
	require.NoError(t, err)
	require.Equal(t, "+PONG", reply)
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, waitFor, tick)

	// Only the connections made after the first cut are live now.
	require.GreaterOrEqual(t, p.CutAll(), 2)
	require.Zero(t, p.CutAll())
}

func TestProxySetRefuse(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	p := redistest.NewProxy(t, s.Addr())
	ctx := context.Background()
	c := noRetryClient(t, p.Addr(), 5*time.Second)
	require.NoError(t, c.Ping(ctx).Err())
	require.Equal(t, 1, p.CutAll())

	p.SetRefuse(true)
	raw, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err, "a refusing proxy still accepts")
	t.Cleanup(func() { _ = raw.Close() })
	_, err = rawPing(raw, bufio.NewReader(raw))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "refused connections must be closed at once: %v", err)
	require.Error(t, c.Ping(ctx).Err())
	require.Zero(t, p.CutAll(), "refused connections are not tracked")

	p.SetRefuse(false)
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, waitFor, tick)
}

func TestProxyTargetDown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	target := l.Addr().String()
	require.NoError(t, l.Close())

	p := redistest.NewProxy(t, target)
	raw, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw.Close() })
	_, err = rawPing(raw, bufio.NewReader(raw))
	require.Error(t, err)
}

// TestProxyCloseLeavesNoGoroutine checks that once Close returns, no
// goroutine of the proxy is left (Close waits for them all).
func TestProxyCloseLeavesNoGoroutine(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var echoWG sync.WaitGroup
	echoWG.Add(1)
	go func() {
		defer echoWG.Done()
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			echoWG.Add(1)
			go func() {
				defer echoWG.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	defer func() {
		_ = echo.Close()
		echoWG.Wait()
	}()

	p := redistest.NewProxy(t, echo.Addr().String())
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		clients = append(clients, c)
		_, err = c.Write([]byte("hi\n"))
		require.NoError(t, err)
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "hi\n", line)
	}
	const proxyFrame = "internal/redistest.(*Proxy)."
	require.Contains(t, goroutineDump(), proxyFrame)

	require.NoError(t, p.Close())
	// Close waits until every proxy goroutine has done its last step; a
	// goroutine may still be returning from its final deferred call for an
	// instant, so poll briefly.
	require.Eventually(t, func() bool { return !strings.Contains(goroutineDump(), proxyFrame) },
		time.Second, time.Millisecond, "no proxy goroutine may outlive Close")
	require.NoError(t, p.Close(), "Close is idempotent")

	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		require.Error(t, err, "Close closes live connections")
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "Close closes live connections: %v", err)
		_ = c.Close()
	}
	_, err = net.DialTimeout("tcp", p.Addr(), time.Second)
	require.Error(t, err, "a closed proxy accepts nothing")
}

// goroutineDump returns the stacks of all goroutines.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}
