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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// partitionedStream returns a stream name without a hash tag that no other
// test uses, and deletes every key derived from it when the test ends.
func partitionedStream(t testing.TB, b backend) string {
	t.Helper()
	stream := fmt.Sprintf("completion-test:own:%s:%08x", b.name, rand.Uint32())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, _ := b.rdb.Keys(ctx, "*"+stream+"*").Result()
		if len(keys) > 0 {
			_ = b.rdb.Del(ctx, keys...).Err()
		}
	})
	return stream
}

// taskInPartition returns a task id Publish puts in partition p of n.
func taskInPartition(p, n int, salt string) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s-%d", salt, i)
		if partitionOf(id, n) == p {
			return id
		}
	}
}

// seqLog records, per task, the seq numbers handed to the handler, in the
// order the handler was called, and who handled them.
type seqLog struct {
	mu  sync.Mutex
	seq map[string][]int
	by  map[string]int // handled count per consumer
}

func newSeqLog() *seqLog { return &seqLog{seq: map[string][]int{}, by: map[string]int{}} }

func (l *seqLog) handler(consumer string, work time.Duration) CompletionHandler {
	return HandlerFunc(func(ctx context.Context, c *Completion) error {
		var seq int
		if _, err := fmt.Sscanf(string(c.Message.Result), `{"seq":%d}`, &seq); err != nil {
			return Permanent(err)
		}
		if work > 0 {
			time.Sleep(rand.N(work))
		}
		l.mu.Lock()
		l.seq[c.Message.TaskID] = append(l.seq[c.Message.TaskID], seq)
		l.by[consumer]++
		l.mu.Unlock()
		return nil
	})
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
		stream := partitionedStream(t, b)
		const parts = 4
		cfg := testConfig(stream)
		cfg.Partitions = parts
		log := newSeqLog()
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		assert.Equal(t, StateIdle, c.State())
		stop := startConsumer(t, c)
		eventually(t, func() bool { return c.Stats().Partitions == parts && c.State() == StateRunning },
			"the only consumer should own every partition")
		for i := 0; i < parts; i++ {
			owner, err := b.rdb.Get(ctx, OwnerKey(stream, i, parts, "g")).Result()
			require.NoError(t, err)
			assert.Equal(t, "c1", owner)
		}
		_, err := b.rdb.ZScore(ctx, MembersKey(stream, "g"), "c1").Result()
		require.NoError(t, err, "the consumer should be in the member set")
		in, err := NewInspector(b.rdb, InspectorConfig{Stream: stream, Group: "g", Partitions: parts})
		require.NoError(t, err)
		info, err := in.Info(ctx)
		require.NoError(t, err)
		require.Len(t, info.Partitions, parts)
		for i, p := range info.Partitions {
			assert.Equal(t, "c1", p.Owner, "Inspector: owner of partition %d", i)
		}

		for i := 0; i < 40; i++ {
			publishSeq(t, b.rdb, stream, fmt.Sprintf("t-%d", i%8), i/8, parts)
		}
		eventually(t, func() bool { return log.total() == 40 }, "not all handled")

		require.NoError(t, stop())
		assert.Equal(t, 0, c.Stats().Partitions)
		for i := 0; i < parts; i++ {
			n, err := b.rdb.Exists(ctx, OwnerKey(stream, i, parts, "g")).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "partition %d's owner key should be released at shutdown", i)
		}
		_, err = b.rdb.ZScore(ctx, MembersKey(stream, "g"), "c1").Result()
		assert.ErrorIs(t, err, redis.Nil, "the consumer should leave the member set at shutdown")
		info, err = in.Info(ctx)
		require.NoError(t, err)
		for i, p := range info.Partitions {
			assert.Empty(t, p.Owner, "Inspector: partition %d has no owner after shutdown", i)
		}
	})
}

// TestOwnershipBalancesAndKeepsOrder runs three consumers that join and
// leave while completions arrive: the partitions are shared out evenly, each
// handed over once its handlers finished, and every task's completions are
// handled exactly once, in order.
func TestOwnershipBalancesAndKeepsOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := partitionedStream(t, b)
		const parts, tasks, perTask = 6, 24, 25
		log := newSeqLog()
		obs := &eventLog{}
		newC := func(name string) *Consumer {
			cfg := testConfig(stream)
			cfg.Consumer = name
			cfg.Partitions = parts
			cfg.OrderByTask = true
			cfg.Concurrency = 6
			cfg.Observer = obs
			return newTestConsumer(t, b.rdb, anyTask, log.handler(name, time.Millisecond), cfg)
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
		stream := partitionedStream(t, b)
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
		require.NoError(t, b.rdb.Set(ctx, OwnerKey(stream, dead, parts, "g"), "dead", 2*time.Second).Err())
		for s := 3; s < 5; s++ {
			publishSeq(t, b.rdb, stream, deadTask, s, parts)
		}

		log := newSeqLog()
		cfg := testConfig(stream)
		cfg.Partitions = parts
		cfg.OrderByTask = true
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		startConsumer(t, c)
		publishSeq(t, b.rdb, stream, liveTask, 0, parts)
		eventually(t, func() bool { return len(log.of(liveTask)) == 1 }, "the free partition should be read")
		assert.Equal(t, 1, c.Stats().Partitions, "the dead owner's partition is not free yet")
		assert.Empty(t, log.of(deadTask), "nobody may read a partition whose owner has not expired")

		if b.mr != nil {
			b.mr.FastForward(3 * time.Second) // miniredis expires keys on FastForward only
		}
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
		stream := partitionedStream(t, b)
		const parts = 2
		obs := &eventLog{}
		log := newSeqLog()
		cfg := testConfig(stream)
		cfg.Partitions = parts
		cfg.Observer = obs
		c := newTestConsumer(t, b.rdb, anyTask, log.handler("c1", 0), cfg)
		startConsumer(t, c)
		eventually(t, func() bool { return c.Stats().Partitions == parts }, "should own both partitions")

		key := OwnerKey(stream, 0, parts, "g")
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
