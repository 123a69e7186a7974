package completion

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// taskInPartition returns a task id Publish puts in partition p of n.
func taskInPartition(p, n int, salt string) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s-%d", salt, i)
		if keys.PartitionOf(id, n) == p {
			return id
		}
	}
}

// seqLog records, per task, the seq numbers handed to the handler, in the
// order the handler was called, and who handled them. It also records any
// moment at which two handlers ran for one task at once.
type seqLog struct {
	mu       sync.Mutex
	seq      map[string][]int
	by       map[string]int // handled count per consumer
	inFlight map[string]string
	overlaps []string
}

func newSeqLog() *seqLog {
	return &seqLog{seq: map[string][]int{}, by: map[string]int{}, inFlight: map[string]string{}}
}

// enter and exit bracket a handler call of consumer for task.
func (l *seqLog) enter(task, consumer string, seq int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, ok := l.inFlight[task]; ok {
		l.overlaps = append(l.overlaps, fmt.Sprintf("task %s: %s started seq %d while %s was handling one", task, consumer, seq, other))
	}
	l.inFlight[task] = consumer
}

func (l *seqLog) exit(task string) {
	l.mu.Lock()
	delete(l.inFlight, task)
	l.mu.Unlock()
}

func (l *seqLog) overlapping() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.overlaps)
}

func (l *seqLog) handler(consumer string, work time.Duration) CompletionHandler {
	return HandlerFunc(func(ctx context.Context, c *Completion) error {
		var seq int
		if _, err := fmt.Sscanf(string(c.Message.Result), `{"seq":%d}`, &seq); err != nil {
			return Permanent(err)
		}
		l.enter(c.Message.TaskID, consumer, seq)
		defer l.exit(c.Message.TaskID)
		if work > 0 {
			if err := hold(ctx, rand.N(work)); err != nil {
				return err
			}
		}
		l.mu.Lock()
		l.seq[c.Message.TaskID] = append(l.seq[c.Message.TaskID], seq)
		l.by[consumer]++
		l.mu.Unlock()
		return nil
	})
}

// ownershipConfig is testConfig for the ownership tests: a time-to-live
// long enough that a loaded machine does not miss renewals.
func ownershipConfig(stream string, parts int) Config {
	cfg := testConfig(stream)
	cfg.Partitions = parts
	cfg.ClaimMinIdle = time.Second
	return cfg
}

func (l *seqLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.seq {
		n += len(s)
	}
	return n
}

func (l *seqLog) of(task string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seq[task])
}

func publishSeq(t testing.TB, rdb *redis.Client, stream, task string, seq, parts int) {
	t.Helper()
	_, err := Publish(context.Background(), rdb, stream, Message{
		OperationID: fmt.Sprintf("op-%s-%d", task, seq), TaskID: task, Success: true,
		Result: []byte(fmt.Sprintf(`{"seq":%d}`, seq)),
	}, WithPartitions(parts))
	require.NoError(t, err)
}

func TestOwnershipOneConsumerOwnsEveryPartition(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := untaggedStream(t, b.rdb)
		const parts = 4
		cfg := ownershipConfig(stream, parts)
		log := newSeqLog()
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		assert.Equal(t, StateIdle, c.State())
		stop := startConsumer(t, c)
		eventually(t, func() bool { return c.Stats().Partitions == parts && c.State() == StateRunning },
			"the only consumer should own every partition")
		for i := 0; i < parts; i++ {
			owner, err := b.rdb.Get(ctx, keys.Owner(stream, i, parts, "g")).Result()
			require.NoError(t, err)
			assert.Equal(t, "c1", owner)
		}
		_, err := b.rdb.ZScore(ctx, keys.Members(stream, "g"), "c1").Result()
		require.NoError(t, err, "the consumer should be in the member set")

		for i := 0; i < 40; i++ {
			publishSeq(t, b.rdb, stream, fmt.Sprintf("t-%d", i%8), i/8, parts)
		}
		eventually(t, func() bool { return log.total() == 40 }, "not all handled")

		require.NoError(t, stop())
		assert.Equal(t, 0, c.Stats().Partitions)
		for i := 0; i < parts; i++ {
			n, err := b.rdb.Exists(ctx, keys.Owner(stream, i, parts, "g")).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "partition %d's owner key should be released at shutdown", i)
		}
		_, err = b.rdb.ZScore(ctx, keys.Members(stream, "g"), "c1").Result()
		assert.ErrorIs(t, err, redis.Nil, "the consumer should leave the member set at shutdown")
	})
}

// TestOwnershipBalancesAndKeepsOrder runs three consumers that join and
// leave while completions arrive: the partitions are shared out evenly, each
// handed over once its handlers finished, and every task's completions are
// handled exactly once, in order.
func TestOwnershipBalancesAndKeepsOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := untaggedStream(t, b.rdb)
		const parts, tasks, perTask = 6, 24, 25
		log := newSeqLog()
		obs := &eventLog{}
		newC := func(name string) *Consumer {
			cfg := ownershipConfig(stream, parts)
			cfg.Consumer = name
			cfg.OrderByTask = true
			cfg.Concurrency = 6
			cfg.Observer = obs
			return newTestConsumer(t, b.rdb, anyTask, log.handler(name, 5*time.Millisecond), cfg)
		}
		c1, c2, c3 := newC("c1"), newC("c2"), newC("c3")
		stop1 := startConsumer(t, c1)
		eventually(t, func() bool { return c1.Stats().Partitions == parts }, "c1 should own every partition")

		total := tasks * perTask
		for i := 0; i < total; i++ {
			publishSeq(t, b.rdb, stream, fmt.Sprintf("t-%d", i%tasks), i/tasks, parts)
			switch i {
			case total / 4:
				startConsumer(t, c2)
			case total / 2:
				eventually(t, func() bool { return c1.Stats().Partitions == 3 && c2.Stats().Partitions == 3 },
					"two consumers should own three partitions each (c1 %d, c2 %d)", c1.Stats().Partitions, c2.Stats().Partitions)
				startConsumer(t, c3)
			case 3 * total / 4:
				eventually(t, func() bool {
					return c1.Stats().Partitions == 2 && c2.Stats().Partitions == 2 && c3.Stats().Partitions == 2
				}, "three consumers should own two partitions each")
				require.NoError(t, stop1())
			}
		}
		eventually(t, func() bool { return log.total() >= total }, "not all handled: %d of %d", log.total(), total)
		eventually(t, func() bool { return c2.Stats().Partitions == 3 && c3.Stats().Partitions == 3 },
			"after c1 left, c2 and c3 should own three partitions each")

		for i := 0; i < tasks; i++ {
			task := fmt.Sprintf("t-%d", i)
			want := make([]int, perTask)
			for s := range want {
				want[s] = s
			}
			assert.Equal(t, want, log.of(task), "task %s: each completion once, in order", task)
		}
		log.mu.Lock()
		for _, name := range []string{"c1", "c2", "c3"} {
			assert.Positive(t, log.by[name], "%s should have handled some completions", name)
		}
		log.mu.Unlock()
		assert.Empty(t, log.overlapping(), "a task's completions must never be handled at once")
		assert.Positive(t, obs.kinds()[EventPartitionReleased], "partitions should have been handed back")
		assert.Zero(t, obs.kinds()[EventPartitionLost], "no partition should be lost in a graceful handover")
	})
}

// TestOwnershipTakesOverFromADeadOwner: a consumer died owning a partition
// and holding entries. Nobody reads the partition until its ownership
// expires; then the new owner handles what the dead one left pending, in
// order, before the entries that came after.
func TestOwnershipTakesOverFromADeadOwner(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := untaggedStream(t, b.rdb)
		const parts = 2
		dead, live := 0, 1
		deadTask := taskInPartition(dead, parts, "dead")
		liveTask := taskInPartition(live, parts, "live")
		deadKey := PartitionStream(stream, dead, parts)
		require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, deadKey, "g", "0").Err())
		for s := 0; s < 3; s++ {
			publishSeq(t, b.rdb, stream, deadTask, s, parts)
		}
		got, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{deadKey, ">"}, Count: 10, Block: -1}).Result()
		require.NoError(t, err)
		require.Len(t, got[0].Messages, 3)
		require.NoError(t, b.rdb.Set(ctx, keys.Owner(stream, dead, parts, "g"), "dead", time.Hour).Err())
		for s := 3; s < 5; s++ {
			publishSeq(t, b.rdb, stream, deadTask, s, parts)
		}

		log := newSeqLog()
		cfg := ownershipConfig(stream, parts)
		cfg.OrderByTask = true
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		startConsumer(t, c)
		publishSeq(t, b.rdb, stream, liveTask, 0, parts)
		eventually(t, func() bool { return len(log.of(liveTask)) == 1 }, "the free partition should be read")
		assert.Equal(t, 1, c.Stats().Partitions, "the dead owner's partition is not free yet")
		assert.Empty(t, log.of(deadTask), "nobody may read a partition whose owner has not expired")

		// The dead owner's key expires (deleted here: the expiry itself is
		// Redis's business, and waiting for it would make the test slow).
		require.NoError(t, b.rdb.Del(ctx, keys.Owner(stream, dead, parts, "g")).Err())
		eventually(t, func() bool { return len(log.of(deadTask)) == 5 }, "the new owner should handle the dead owner's entries")
		assert.Equal(t, []int{0, 1, 2, 3, 4}, log.of(deadTask), "left-behind entries first, in order")
		assert.Equal(t, 2, c.Stats().Partitions)
		assert.GreaterOrEqual(t, c.Stats().Reclaimed, int64(3))
		eventually(t, func() bool { return pendingCount(t, b.rdb, deadKey, "g") == 0 }, "all acknowledged")
	})
}

// TestOwnershipLost: when another consumer holds a partition's key (this
// one could not renew it in time), the consumer stops reading the
// partition, and takes it back once it is free.
func TestOwnershipLost(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := untaggedStream(t, b.rdb)
		const parts = 2
		obs := &eventLog{}
		log := newSeqLog()
		cfg := ownershipConfig(stream, parts)
		cfg.Observer = obs
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		startConsumer(t, c)
		eventually(t, func() bool { return c.Stats().Partitions == parts }, "should own both partitions")

		key := keys.Owner(stream, 0, parts, "g")
		require.NoError(t, b.rdb.Set(ctx, key, "intruder", time.Minute).Err())
		eventually(t, func() bool { return obs.kinds()[EventPartitionLost] == 1 && c.Stats().Partitions == 1 },
			"the consumer should notice it lost partition 0")

		lostTask, keptTask := taskInPartition(0, parts, "lost"), taskInPartition(1, parts, "kept")
		publishSeq(t, b.rdb, stream, lostTask, 0, parts)
		publishSeq(t, b.rdb, stream, keptTask, 0, parts)
		eventually(t, func() bool { return len(log.of(keptTask)) == 1 }, "partition 1 is still read")
		assert.Empty(t, log.of(lostTask), "partition 0 belongs to someone else")

		require.NoError(t, b.rdb.Del(ctx, key).Err())
		eventually(t, func() bool { return len(log.of(lostTask)) == 1 }, "the free partition should be taken back")
		owner, err := b.rdb.Get(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, "c1", owner)
	})
}

// TestOwnershipCutOffOwnerEndsHandlersBeforeTakeover: the owner of a
// partition loses Redis while a handler runs (ShutdownTimeout would let it
// run on for longer than the ownership lives): Redis refuses it, or goes
// silent, which holds its blocked read and its Redis calls for seconds.
// Its handler's context is cancelled before the ownership can expire, and
// only then does another consumer take the partition over and handle the
// task's completions, in order: two handlers never run for one task at
// once.
func TestOwnershipCutOffOwnerEndsHandlersBeforeTakeover(t *testing.T) {
	t.Run("refused", func(t *testing.T) { testOwnerCutOff(t, false) })
	t.Run("silent", func(t *testing.T) { testOwnerCutOff(t, true) })
}

func testOwnerCutOff(t *testing.T, silent bool) {
	b := backend{name: "redis", real: true, rdb: realClient(t)}
	stream := untaggedStream(t, b.rdb)
	const parts = 2
	task := taskInPartition(0, parts, "slow")
	log := newSeqLog()

	proxy := redistest.NewProxy(t, sharedRedisAddr(t))
	opts := &redis.Options{Addr: proxy.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond}
	if silent {
		opts = &redis.Options{Addr: proxy.Addr()} // go-redis's defaults: calls wait out ReadTimeout
	}
	viaProxy := redis.NewClient(opts)
	t.Cleanup(func() { _ = viaProxy.Close() })
	started, cancelled := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := HandlerFunc(func(ctx context.Context, c *Completion) error {
		log.enter(c.Message.TaskID, "a", 0)
		defer log.exit(c.Message.TaskID)
		once.Do(func() { close(started) })
		select {
		case <-ctx.Done():
			close(cancelled)
			return ctx.Err()
		case <-time.After(time.Minute):
			return nil
		}
	})
	cfgA := ownershipConfig(stream, parts)
	cfgA.Consumer = "a"
	cfgA.OrderByTask = true
	cfgA.ClaimMinIdle = 4 * time.Second
	cfgA.ShutdownTimeout = 30 * time.Second // far beyond the ownership's life
	if silent {
		cfgA.Block = 3 * time.Second // a silent Redis holds the read for Block + ReadTimeout
	}
	a := newTestConsumer(t, viaProxy, anyTask, slow, cfgA)
	stopA := startConsumer(t, a)
	eventually(t, func() bool { return a.Stats().Partitions == parts }, "a should own both partitions")
	for s := 0; s < 3; s++ {
		publishSeq(t, b.rdb, stream, task, s, parts)
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("a's handler was not called")
	}

	cfgB := cfgA
	cfgB.Block = 200 * time.Millisecond
	cfgB.Consumer = "b"
	bc := newTestConsumer(t, b.rdb, anyTask, log.handler("b", 0), cfgB)
	startConsumer(t, bc)
	if silent {
		proxy.SetStall(true)
	} else {
		proxy.SetRefuse(true)
		proxy.CutAll()
	}

	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("the cut-off owner's handler was not cancelled")
	}
	eventually(t, func() bool { return a.State() == StateDegraded }, "the cut-off consumer should say it is degraded")
	require.Eventually(t, func() bool { return len(log.of(task)) == 3 }, 30*time.Second, 10*time.Millisecond,
		"b should take the partition over and handle the task")
	assert.Equal(t, []int{0, 1, 2}, log.of(task))
	assert.Empty(t, log.overlapping(), "two handlers ran for one task at once")
	assert.Equal(t, parts, bc.Stats().Partitions)
	proxy.SetRefuse(true)
	proxy.CutAll()
	proxy.SetStall(false)
	_ = stopA()
}

// TestOwnershipConcurrencyBoundsAllPartitions: Concurrency bounds the
// handlers running at once over every partition a consumer owns.
func TestOwnershipConcurrencyBoundsAllPartitions(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := untaggedStream(t, b.rdb)
		const parts, limit, n = 4, 3, 60
		var mu sync.Mutex
		running, most, done := 0, 0, 0
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			_ = hold(ctx, 5*time.Millisecond)
			mu.Lock()
			running--
			done++
			mu.Unlock()
			return nil
		})
		cfg := ownershipConfig(stream, parts)
		cfg.Concurrency = limit
		c := newTestConsumer(t, b.rdb, anyTask, h, cfg)
		startConsumer(t, c)
		eventually(t, func() bool { return c.Stats().Partitions == parts }, "should own every partition")
		for i := 0; i < n; i++ {
			publishSeq(t, b.rdb, stream, fmt.Sprintf("t-%d", i), 0, parts)
		}
		eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return done == n }, "not all handled")
		mu.Lock()
		defer mu.Unlock()
		assert.LessOrEqual(t, most, limit, "more handlers ran at once than Concurrency")
		assert.Equal(t, limit, most, "the partitions should share all of Concurrency")
	})
}
