package taskstream

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// clientOf returns a client of addr, closed when the test ends.
func clientOf(t testing.TB, addr string, name string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		ClientName:               name,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// watchAll subscribes to each task from the start and collects what each
// gets, until the end; wait returns the events and errors.
func watchAll(t *testing.T, h *Hub, tasks []string) (wait func() ([][]string, []error)) {
	t.Helper()
	var wg sync.WaitGroup
	got := make([][]string, len(tasks))
	errs := make([]error, len(tasks))
	for i, id := range tasks {
		sub, err := h.Subscribe(context.Background(), id, "0-0")
		require.NoError(t, err)
		wg.Go(func() {
			defer sub.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for {
				e, err := sub.Next(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				got[i] = append(got[i], string(e.Data))
			}
		})
	}
	return func() ([][]string, []error) { wg.Wait(); return got, errs }
}

// While the hub's connections are cut again and again, every subscriber
// still gets every event of its task exactly once, in order: after each
// reconnect the hub re-reads every task from each subscriber's last id.
func TestHubCutConnectionsLoseNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := redistest.NewProxy(t, srv.Addr())
	writer := clientOf(t, srv.Addr(), "writer")
	cfg := Config{}
	ws := newTestStreams(t, writer, cfg)
	hs := newTestStreams(t, clientOf(t, proxy.Addr(), "hub"), cfg)
	h := startHub(t, hs, HubConfig{Buffer: 16, ErrorBackoff: 10 * time.Millisecond, MaxErrorBackoff: 50 * time.Millisecond})

	const tasks, events = 40, 60
	ids := make([]string, tasks)
	for i := range ids {
		ids[i] = fmt.Sprintf("t-%d", i)
	}
	wait := watchAll(t, h, ids)

	ctx := context.Background()
	stopCutting := make(chan struct{})
	var cutter sync.WaitGroup
	cuts := 0
	cutter.Go(func() {
		for {
			select {
			case <-stopCutting:
				return
			case <-time.After(20 * time.Millisecond):
				proxy.CutAll()
				cuts++
			}
		}
	})
	var writers sync.WaitGroup
	for _, id := range ids {
		writers.Go(func() {
			for j := range events {
				if _, err := ws.Append(ctx, id, ev(j)); err != nil {
					t.Error(err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	writers.Wait()
	close(stopCutting)
	cutter.Wait()
	for _, id := range ids {
		_, err := ws.Finish(ctx, id)
		require.NoError(t, err)
	}
	got, errs := wait()
	want := make([]string, 0, events+1)
	for j := range events {
		want = append(want, string(ev(j)))
	}
	want = append(want, FinishEvent)
	for i := range ids {
		require.ErrorIs(t, errs[i], io.EOF, "task %d", i)
		require.Equal(t, want, got[i], "task %d: every event once, in order", i)
	}
	t.Logf("%d cuts, hub stats %+v", cuts, h.Stats())
	assert.Positive(t, h.Stats().Reconnects)
}

// A pub/sub connection that goes silent (Redis behind a network that drops
// packets) is noticed by the health check and replaced; what was published
// meanwhile is read after the reconnect.
func TestHubSilentConnectionIsReplaced(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := redistest.NewProxy(t, srv.Addr())
	ws := newTestStreams(t, clientOf(t, srv.Addr(), "writer"), Config{})
	hubClient := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = hubClient.Close() })
	h := startHub(t, newTestStreams(t, hubClient, Config{}), HubConfig{HealthCheckInterval: 200 * time.Millisecond, ErrorBackoff: 10 * time.Millisecond})
	ctx := context.Background()
	sub, err := h.Subscribe(ctx, "t-1", "")
	require.NoError(t, err)
	_, err = ws.Append(ctx, "t-1", ev(0))
	require.NoError(t, err)
	_, err = next(t, sub)
	require.NoError(t, err)
	// The first event comes from the subscriber's first read, which need
	// not wait for the pub/sub connection: wait until it is up, or there is
	// nothing to lose and replace.
	require.Eventually(t, h.Connected, 10*time.Second, 10*time.Millisecond, "the pub/sub connection came up")

	proxy.SetStall(true)
	_, err = ws.Append(ctx, "t-1", ev(1)) // published while the hub hears nothing
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.Stats().Reconnects > 0 }, 20*time.Second, 10*time.Millisecond)
	proxy.CutAll() // the stalled connections go; new ones flow
	proxy.SetStall(false)
	e, err := next(t, sub)
	require.NoError(t, err)
	assert.Equal(t, string(ev(1)), string(e.Data))
}

// However many subscriptions, the hub uses the pub/sub connection and at
// most Readers connections for reads.
func TestHubConnectionsDoNotGrowWithSubscribers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	hubClient := clientOf(t, srv.Addr(), "hub")
	ws := newTestStreams(t, clientOf(t, srv.Addr(), "writer"), Config{})
	h := startHub(t, newTestStreams(t, hubClient, Config{}), HubConfig{Readers: 2})
	ctx := context.Background()
	const n = 2000
	subs := make([]*Subscription, n)
	for i := range subs {
		var err error
		subs[i], err = h.Subscribe(ctx, fmt.Sprintf("t-%d", i), "")
		require.NoError(t, err)
	}
	for i := range n {
		_, err := ws.Append(ctx, fmt.Sprintf("t-%d", i), ev(i))
		require.NoError(t, err)
	}
	for i, s := range subs {
		e, err := next(t, s)
		require.NoError(t, err)
		require.Equal(t, string(ev(i)), string(e.Data))
	}
	list, err := ws.client.(*redis.Client).ClientList(ctx).Result()
	require.NoError(t, err)
	conns := strings.Count(list, " name=hub ")
	t.Logf("%d subscriptions on %d connections", n, conns)
	assert.LessOrEqual(t, conns, 3)
	for _, s := range subs {
		s.Close()
	}
}

// slowPipelines is a Client whose pipelines each take hold longer, and
// which records how many ran at once at most.
type slowPipelines struct {
	Client
	hold time.Duration

	mu             sync.Mutex
	inFlight, peak int
}

func (c *slowPipelines) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	c.mu.Lock()
	c.inFlight++
	c.peak = max(c.peak, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	hold := time.NewTimer(c.hold)
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c.Client.Pipelined(ctx, fn)
}

// The health check's canary takes one of the readers' connection slots:
// while a reader's pipeline is slow the canary waits for it (and gives no
// verdict rather than a false one), so the hub never has more than Readers
// ordinary connections busy.
func TestHubCanaryWaitsForAReadersSlot(t *testing.T) {
	rdb := redistest.SharedClient(t)
	b := redistest.Backend{Client: rdb, Real: true}
	slow := &slowPipelines{Client: rdb, hold: 150 * time.Millisecond}
	cfg := testConfig(t, b)
	ws := newTestStreams(t, rdb, cfg)
	h := startHub(t, newTestStreams(t, slow, cfg), HubConfig{Readers: 1, HealthCheckInterval: 100 * time.Millisecond})
	ctx := context.Background()
	sub, err := h.Subscribe(ctx, "t-1", "")
	require.NoError(t, err)
	defer sub.Close()
	require.Eventually(t, h.Connected, 10*time.Second, 10*time.Millisecond, "the pub/sub connection came up")
	// Each event is read by a pipeline held 150ms, the next written as
	// soon as it arrives: the reader is busy nearly all the time, and a
	// canary is due every 100ms.
	for i := range 12 {
		_, err := ws.Append(ctx, "t-1", ev(i))
		require.NoError(t, err)
		e, err := next(t, sub)
		require.NoError(t, err)
		require.Equal(t, string(ev(i)), string(e.Data))
	}
	slow.mu.Lock()
	peak := slow.peak
	slow.mu.Unlock()
	assert.Equal(t, 1, peak, "pipelines at once, with Readers 1")
	assert.Zero(t, h.Stats().Reconnects, "a canary that waited for a slot is no verdict")
}
