package completion

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

// The behaviour suite on a Redis Cluster of three masters (no replicas),
// through *redis.ClusterClient and through a cluster-mode UniversalClient.
// Each subtest uses a stream served by a chosen master, so that routing to
// every node is exercised.

// clusterMasters is the size of the test clusters.
const clusterMasters = 3

// clusterStream returns a stream key, named after the test, whose slot the
// cluster's node serves. It has no hash tag, so the consumer's
// duplicate-suppression keys (<stream>:done:<op>) hash elsewhere, while
// DeadLetterStreamFor tags the dead-letter stream into the stream's slot.
func clusterStream(t testing.TB, cl *redistest.Cluster, node int) string {
	t.Helper()
	base := strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
	for i := 0; i < 100000; i++ {
		s := fmt.Sprintf("ctest:%s:%d", base, i)
		if cl.MasterFor(s) == node {
			require.Equal(t, redistest.KeySlot(s), int(keys.Slot(s)))
			return s
		}
	}
	t.Fatalf("no stream name found on node %d", node)
	return ""
}

func cpublish(t testing.TB, rdb XAdder, stream string, m Message) string {
	t.Helper()
	id, err := Publish(context.Background(), rdb, stream, m)
	require.NoError(t, err)
	return id
}

func cpending(t testing.TB, rdb redis.UniversalClient, stream, group string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, group).Result()
	require.NoError(t, err)
	return p.Count
}

func cdeadLetters(t testing.TB, rdb redis.UniversalClient, stream string) []redis.XMessage {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), DeadLetterStreamFor(stream), "-", "+").Result()
	require.NoError(t, err)
	return msgs
}

// clusterConfig is testConfig for subtests that do not test reclaiming:
// entries become claimable only after 5 s, so that a test machine stalled
// for a moment does not redeliver them (at-least-once allows that).
func clusterConfig(stream string) Config {
	cfg := testConfig(stream)
	cfg.ClaimMinIdle = 5 * time.Second
	return cfg
}

// anyTask is a registry that knows every task.
var anyTask = TaskRegistryFunc(func(_ context.Context, op, task string) (Task, error) {
	return Task{TaskID: task, SessionID: "s", ToolCallID: "tc", OperationID: op, Status: "running"}, nil
})

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	rdb := cl.Client(t)
	ctx := context.Background()

	t.Run("HandlesAndAcks", func(t *testing.T) {
		stream := clusterStream(t, cl, 0)
		const n = 20
		h := newRecorder()
		c := newTestConsumer(t, rdb, registryWith(n), h, clusterConfig(stream))
		stop := startConsumer(t, c)
		for i := 1; i <= n; i++ {
			cpublish(t, rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true, Result: StringResult(fmt.Sprint(i))})
		}
		seen := map[string]Completion{}
		for len(seen) < n {
			got := h.next(t)
			seen[got.Message.OperationID] = got
		}
		for i := 1; i <= n; i++ {
			got := seen[fmt.Sprintf("op-%d", i)]
			assert.Equal(t, fmt.Sprintf("t-%d", i), got.Task.TaskID)
			assert.Equal(t, fmt.Sprintf("%q", fmt.Sprint(i)), string(got.Message.Result))
			assert.Equal(t, int64(1), got.Deliveries)
		}
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "entries left unacknowledged")
		require.NoError(t, stop())
		assert.Equal(t, int64(n), c.Stats().Handled)
		assert.Empty(t, cdeadLetters(t, rdb, stream))
	})

	t.Run("StreamsOnEveryMaster", func(t *testing.T) {
		hs := make([]*recorder, clusterMasters)
		streams := make([]string, clusterMasters)
		for node := range clusterMasters {
			streams[node] = clusterStream(t, cl, node)
			hs[node] = newRecorder()
			cfg := clusterConfig(streams[node])
			cfg.Consumer = fmt.Sprintf("c-%d", node)
			startConsumer(t, newTestConsumer(t, rdb, registryWith(clusterMasters), hs[node], cfg))
		}
		for node, s := range streams {
			cpublish(t, rdb, s, Message{OperationID: fmt.Sprintf("op-%d", node+1), TaskID: fmt.Sprintf("t-%d", node+1), Success: true})
		}
		for node, s := range streams {
			assert.Equal(t, fmt.Sprintf("op-%d", node+1), hs[node].next(t).Message.OperationID)
			eventually(t, func() bool { return cpending(t, rdb, s, "g") == 0 }, "not acked on node %d", node)
			// The stream lives on its master: that node answers for it
			// directly, without a redirection.
			n, err := cl.Node(node).Client(t).XLen(ctx, s).Result()
			require.NoError(t, err, "stream %s on node %d", s, node)
			assert.Equal(t, int64(1), n)
		}
	})

	t.Run("HandlerErrorRetried", func(t *testing.T) {
		stream := clusterStream(t, cl, 1)
		var calls atomic.Int32
		h := newRecorder()
		h.fn = func(c *Completion) error {
			if calls.Add(1) < 3 {
				return errors.New("downstream unavailable")
			}
			return nil
		}
		c := newTestConsumer(t, rdb, registryWith(1), h, clusterConfig(stream))
		startConsumer(t, c)
		cpublish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: StringResult("x")})
		for want := int64(1); want <= 3; want++ {
			got := h.next(t)
			assert.Equal(t, want, got.Deliveries)
			assert.Equal(t, `"x"`, string(got.Message.Result))
		}
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "not acked after success")
		assert.Equal(t, int64(2), c.Stats().Retried)
	})

	t.Run("CrashedConsumerReclaimed", func(t *testing.T) {
		stream := clusterStream(t, cl, 2)
		require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
		for i := 1; i <= 5; i++ {
			cpublish(t, rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		}
		// A consumer that read everything and died without acking.
		_, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{stream, ">"}, Count: 10, Block: -1}).Result()
		require.NoError(t, err)
		require.Equal(t, int64(5), cpending(t, rdb, stream, "g"))

		h := newRecorder()
		c := newTestConsumer(t, rdb, registryWith(5), h, testConfig(stream))
		startConsumer(t, c)
		seen := map[string]bool{}
		for len(seen) < 5 {
			got := h.next(t)
			assert.Equal(t, int64(2), got.Deliveries)
			seen[got.Message.OperationID] = true
		}
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "reclaimed entries not acked")
		assert.Equal(t, int64(5), c.Stats().Reclaimed)
	})

	t.Run("DeadLetters", func(t *testing.T) {
		stream := clusterStream(t, cl, 0)
		dl := DeadLetterStreamFor(stream)
		// The dead-letter stream shares the stream's slot, hence its node,
		// so the move is one script (atomicDeadLetter).
		require.Equal(t, keys.Slot(stream), keys.Slot(dl))
		require.Equal(t, 0, cl.MasterFor(dl))
		cfg := clusterConfig(stream)
		cfg.MaxDeliveries = 2
		h := newRecorder()
		h.fn = func(c *Completion) error {
			switch c.Message.OperationID {
			case "op-1":
				return Permanent(errors.New("schema is wrong"))
			case "op-2":
				return errors.New("always fails")
			}
			return nil
		}
		c := newTestConsumer(t, rdb, registryWith(3), h, cfg)
		startConsumer(t, c)
		poison, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"data": "not json"}}).Result()
		require.NoError(t, err)
		noData, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"other": "x", "dl_reason": "spoof"}}).Result()
		require.NoError(t, err)
		perm := cpublish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		maxed := cpublish(t, rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
		cpublish(t, rdb, stream, Message{OperationID: "op-3", TaskID: "t-3", Success: true})

		want := map[string]string{poison: ReasonMalformed, noData: ReasonMalformed, perm: ReasonPermanent, maxed: ReasonMaxDeliveries}
		eventually(t, func() bool { return len(cdeadLetters(t, rdb, stream)) == len(want) }, "not all dead-lettered: %d", len(cdeadLetters(t, rdb, stream)))
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "left pending")
		// Read straight from the stream's master: the dead letters are
		// there (another node would answer MOVED).
		direct, err := cl.Node(0).Client(t).XRange(ctx, dl, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, direct, len(want))
		for _, m := range direct {
			src := m.Values[DeadLetterIDField].(string)
			assert.Equal(t, want[src], m.Values[DeadLetterReasonField], "entry %s", src)
			assert.Equal(t, stream, m.Values[DeadLetterStreamField])
		}
		other := cl.Node(1).Client(t)
		assert.ErrorContains(t, other.XLen(ctx, dl).Err(), "MOVED")
		eventually(t, func() bool { return c.Stats().DeadLettered == int64(len(want)) }, "dead letters not counted: %+v", c.Stats())
		assert.Len(t, h.all(), 4, "op-1 once, op-2 MaxDeliveries times, op-3 once")
	})

	t.Run("Lease", func(t *testing.T) {
		stream := clusterStream(t, cl, 1)
		cfg := testConfig(stream)
		cfg.ClaimMinIdle = 300 * time.Millisecond
		cfg.ClaimInterval = 20 * time.Millisecond
		var calls atomic.Int32
		slow := HandlerFunc(func(ctx context.Context, c *Completion) error {
			calls.Add(1)
			return hold(ctx, 3*cfg.ClaimMinIdle)
		})
		a := newTestConsumer(t, rdb, registryWith(1), slow, cfg)
		startConsumer(t, a)
		cfgB := cfg
		cfgB.Consumer = "c2"
		bc := newTestConsumer(t, rdb, registryWith(1), slow, cfgB)
		startConsumer(t, bc)
		cpublish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		eventually(t, func() bool { return a.Stats().Handled+bc.Stats().Handled == 1 }, "not handled")
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "not acked")
		assert.Equal(t, int32(1), calls.Load(), "the handler ran more than once")
		assert.Zero(t, a.Stats().Reclaimed+bc.Stats().Reclaimed)
	})

	t.Run("ShutdownWhileBlocked", func(t *testing.T) {
		clusterShutdownWhileBlocked(t, cl, rdb, 2)
	})

	t.Run("StaleConsumersAndSelfRemoval", func(t *testing.T) {
		stream := clusterStream(t, cl, 0)
		require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
		cpublish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		_, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "holder", Streams: []string{stream, ">"}, Count: 1, Block: -1}).Result()
		require.NoError(t, err)
		require.NoError(t, rdb.XGroupCreateConsumer(ctx, stream, "g", "empty").Err())
		idleAtLeast(t, rdb, stream, "g", 20*time.Millisecond, "holder", "empty")

		cfg := testConfig(stream)
		cfg.StaleConsumerAge = 10 * time.Millisecond
		cfg.ClaimMinIdle = time.Hour // keep "holder"'s entry where it is
		cfg.LeaseInterval = time.Minute
		h := newRecorder()
		c := newTestConsumer(t, rdb, registryWith(2), h, cfg)
		stop := startConsumer(t, c)
		names := func() map[string]bool {
			consumers, err := rdb.XInfoConsumers(ctx, stream, "g").Result()
			require.NoError(t, err)
			m := map[string]bool{}
			for _, x := range consumers {
				m[x.Name] = true
			}
			return m
		}
		eventually(t, func() bool { n := names(); return !n["empty"] && n["holder"] && n["c1"] },
			"the empty consumer should go, the holder stay")
		cpublish(t, rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
		assert.Equal(t, "op-2", h.next(t).Message.OperationID)
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 1 }, "op-2 not acked")
		require.NoError(t, stop())
		assert.Equal(t, map[string]bool{"holder": true}, names(), "a consumer holding nothing removes itself at shutdown")
	})

	t.Run("DuplicateSuppression", func(t *testing.T) {
		stream := clusterStream(t, cl, 1)
		cfg := clusterConfig(stream)
		cfg.DedupTTL = time.Minute
		h := newRecorder()
		c := newTestConsumer(t, rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		m := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
		cpublish(t, rdb, stream, m)
		h.next(t)
		key := stream + ":done:op-1"
		assert.NotEqual(t, keys.Slot(stream), keys.Slot(key), "the record lives in another slot (fine: it is a single-key command)")
		eventually(t, func() bool { return rdb.Exists(ctx, key).Val() == 1 }, "no dedup record %s", key)
		cpublish(t, rdb, stream, m)
		eventually(t, func() bool { return c.Stats().Duplicates == 1 }, "duplicate not suppressed")
		eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "duplicate not acked")
		assert.Len(t, h.all(), 1)
	})

	t.Run("UniversalClient", func(t *testing.T) {
		// One seed address: IsClusterMode makes it a cluster client that
		// discovers the other nodes.
		u := redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:                    cl.Addrs()[:1],
			IsClusterMode:            true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		})
		t.Cleanup(func() { _ = u.Close() })
		require.IsType(t, (*redis.ClusterClient)(nil), u)
		for _, node := range []int{1, 2} { // streams away from the seed node
			stream := clusterStream(t, cl, node)
			h := newRecorder()
			c := newTestConsumer(t, u, registryWith(2), h, clusterConfig(stream))
			stop := startConsumer(t, c)
			cpublish(t, u, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
			u.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"data": "{"}})
			assert.Equal(t, "op-1", h.next(t).Message.OperationID)
			eventually(t, func() bool { return len(cdeadLetters(t, u, stream)) == 1 }, "poison not dead-lettered")
			eventually(t, func() bool { return cpending(t, u, stream, "g") == 0 }, "not acked")
			require.NoError(t, stop())
		}
		clusterShutdownWhileBlocked(t, cl, u, 1)
	})
}

// clusterShutdownWhileBlocked checks that cancelling Run while its
// XREADGROUP is blocked (BLOCK of a minute) on the stream's master returns
// at once: the read is ended with CLIENT UNBLOCK on that master.
func clusterShutdownWhileBlocked(t *testing.T, cl *redistest.Cluster, rdb redis.UniversalClient, node int) {
	stream := clusterStream(t, cl, node)
	cfg := testConfig(stream)
	cfg.Block = time.Minute
	c := newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	eventually(t, func() bool { return c.State() == StateRunning }, "not running")
	master := cl.Node(node).Client(t)
	eventually(t, func() bool {
		list, err := master.ClientList(context.Background()).Result()
		return err == nil && blockedReads(list) == 1
	}, "no blocked XREADGROUP on the stream's master (node %d)", node)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancellation while blocked")
	}
	took := time.Since(start)
	assert.Less(t, took, 5*time.Second, "the blocked read was not interrupted (Block is a minute)")
	t.Logf("Run returned %v after cancellation", took)
	assert.Equal(t, StateIdle, c.State())
	list, err := master.ClientList(context.Background()).Result()
	require.NoError(t, err)
	assert.Zero(t, blockedReads(list), "no read may stay blocked:\n%s", list)
}

// blockedReads counts the clients in a CLIENT LIST blocked in XREADGROUP.
func blockedReads(list string) int {
	n := 0
	for line := range strings.Lines(list) {
		f := " " + strings.TrimSpace(line) + " "
		if strings.Contains(f, " cmd=xreadgroup ") && strings.Contains(f, " flags=b ") {
			n++
		}
	}
	return n
}

// TestClusterMasterRestart kills the master of the stream while a consumer
// and a publisher run, keeps publishing (retrying each message until
// Publish returns an id), restarts the master, and checks that every
// message published successfully is handled, that the consumer went
// degraded and came back, and that Run never returned.
func TestClusterMasterRestart(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	const node = 1
	stream := clusterStream(t, cl, node)
	rdb := cl.Client(t)

	var mu sync.Mutex
	handled := map[string]int{} // entry id -> handler calls
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		mu.Lock()
		handled[c.EntryID]++
		mu.Unlock()
		return nil
	})
	nHandled := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}
	cfg := testConfig(stream)
	cfg.Block = 5 * time.Second // the kill must end the blocked read, not its timeout
	c := newTestConsumer(t, rdb, anyTask, h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	eventually(t, func() bool { return c.State() == StateRunning }, "not running")

	// The publisher, on a client of its own.
	pub := cl.Client(t)
	var pmu sync.Mutex
	var published []string // ids Publish returned
	var failures atomic.Int64
	pubStop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for i := 1; ; i++ {
			m := Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true}
			for {
				select {
				case <-pubStop:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
				id, err := Publish(pctx, pub, stream, m)
				pcancel()
				if err == nil {
					pmu.Lock()
					published = append(published, id)
					pmu.Unlock()
					break
				}
				failures.Add(1)
				select { // try again at the next tick
				case <-pace.C:
				case <-pubStop:
					return
				}
			}
			select {
			case <-pace.C:
			case <-pubStop:
				return
			}
		}
	}()
	defer func() { // also when an assertion fails midway
		select {
		case <-pubStop:
		default:
			close(pubStop)
		}
		<-pubDone
	}()
	nPublished := func() int {
		pmu.Lock()
		defer pmu.Unlock()
		return len(published)
	}

	eventually(t, func() bool { return nHandled() >= 10 }, "nothing handled before the kill")
	cl.Node(node).Kill()
	killedAt := time.Now()
	before := nPublished()
	eventually(t, func() bool { return c.State() == StateDegraded }, "consumer not degraded while its master is down: %v", c.State())
	eventually(t, func() bool { return failures.Load() > 0 }, "no publish failed while the master was down")
	// Some more attempts, all failing while the master is down.
	more := failures.Load() + 5
	eventually(t, func() bool { return failures.Load() >= more }, "the publisher stopped trying")
	assert.LessOrEqual(t, nPublished()-before, 1, "publishes succeeded while the stream's master was down")

	cl.Node(node).Restart()
	cl.WaitOK(t)
	t.Logf("master down for %v; %d publish attempts failed", time.Since(killedAt).Round(time.Millisecond), failures.Load())
	after := nPublished()
	eventually(t, func() bool { return nPublished() >= after+10 }, "publishing did not resume after the restart")
	close(pubStop)
	<-pubDone

	pmu.Lock()
	ids := append([]string(nil), published...)
	pmu.Unlock()
	eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if handled[id] == 0 {
				return false
			}
		}
		return true
	}, "not every published entry was handled (%d published, %d handled)", len(ids), nHandled())
	eventually(t, func() bool { return c.State() == StateRunning }, "consumer did not return to running: %v", c.State())
	eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "entries left pending")
	select {
	case err := <-runDone:
		t.Fatalf("Run returned during the outage: %v", err)
	default:
	}
	st := c.Stats()
	assert.Positive(t, st.RedisErrors)
	t.Logf("published %d, handled %d distinct entries; stats %+v", len(ids), nHandled(), st)

	// The blocking read is back on the restarted master, on a connection
	// that CLIENT UNBLOCK can end.
	master := cl.Node(node).Client(t)
	eventually(t, func() bool {
		list, err := master.ClientList(context.Background()).Result()
		return err == nil && blockedReads(list) == 1
	}, "no blocked XREADGROUP on the restarted master")
	start := time.Now()
	cancel()
	select {
	case err := <-runDone:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
	assert.Less(t, time.Since(start), 2*time.Second, "the blocked read on the restarted master was not interrupted")
}

// TestClusterSlotMigration moves the stream's slot (with the dead-letter
// stream, which shares it) to another master while a consumer is blocked
// reading it on the old one: the consumer must follow the stream and go on
// handling what is published after the move.
func TestClusterSlotMigration(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	rdb := cl.Client(t)
	ctx := context.Background()
	stream := clusterStream(t, cl, 0)
	h := newRecorder()
	cfg := testConfig(stream)
	cfg.Block = 2 * time.Second
	c := newTestConsumer(t, rdb, registryWith(3), h, cfg)
	stop := startConsumer(t, c)
	cpublish(t, rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
	assert.Equal(t, "op-1", h.next(t).Message.OperationID)
	old := cl.Node(0).Client(t)
	eventually(t, func() bool {
		list, err := old.ClientList(ctx).Result()
		return err == nil && blockedReads(list) == 1
	}, "no blocked XREADGROUP on node 0")

	cl.MigrateSlot(t, int(keys.Slot(stream)), 1)
	require.Equal(t, 1, cl.MasterFor(stream))
	require.Equal(t, 1, cl.MasterFor(DeadLetterStreamFor(stream)))
	// The blocked read on the old master ends with -MOVED.
	eventually(t, func() bool {
		list, err := old.ClientList(ctx).Result()
		return err == nil && blockedReads(list) == 0
	}, "the read stays blocked on the old master")

	cpublish(t, rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"data": "{"}})
	select {
	case got := <-h.calls:
		assert.Equal(t, "op-2", got.Message.OperationID)
		t.Logf("handled after the move; stats %+v", c.Stats())
	case <-time.After(10 * time.Second):
		// Seen with client.go's blockingReader keeping its dedicated
		// connection after a -MOVED reply (a server error): every
		// blocking read goes back to the old master.
		t.Fatalf("nothing handled after the slot moved; state %v, stats %+v", c.State(), c.Stats())
	}
	eventually(t, func() bool { return len(cdeadLetters(t, rdb, stream)) == 1 }, "poison not dead-lettered after the move")
	eventually(t, func() bool { return cpending(t, rdb, stream, "g") == 0 }, "not acked after the move")
	eventually(t, func() bool { return c.State() == StateRunning }, "not running after the move: %v", c.State())
	newMaster := cl.Node(1).Client(t)
	eventually(t, func() bool {
		list, err := newMaster.ClientList(ctx).Result()
		return err == nil && blockedReads(list) == 1
	}, "the blocking read did not move to the new master")
	start := time.Now()
	require.NoError(t, stop())
	assert.Less(t, time.Since(start), cfg.Block, "shutdown must interrupt the read on the new master")
}

// TestClusterShutdownWhileMasterDown cancels Run while its read is blocked
// on a master that has frozen (so CLIENT UNBLOCK cannot reach it) and then
// crashes: Run must still return promptly, and nothing may race.
func TestClusterShutdownWhileMasterDown(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	const node = 2
	rdb := cl.Client(t)
	stream := clusterStream(t, cl, node)
	cfg := clusterConfig(stream)
	cfg.Block = time.Minute
	c := newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	master := cl.Node(node).Client(t)
	eventually(t, func() bool {
		list, err := master.ClientList(context.Background()).Result()
		return err == nil && blockedReads(list) == 1
	}, "no blocked XREADGROUP on the stream's master")

	cl.Node(node).Pause()
	start := time.Now()
	cancel()
	// The stop has begun: the UNBLOCK is on its way to the frozen master.
	eventually(t, func() bool { return c.State() == StateStopping }, "the consumer is not stopping")
	cl.Node(node).Kill()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	t.Logf("Run returned %v after cancellation", took)
	assert.Less(t, took, 10*time.Second)
}
