package completion

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		var calls atomic.Int32
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			calls.Add(1)
			return Permanent(errors.New("result schema is wrong"))
		})
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == 1 }, "not dead-lettered")
		dl := deadLetters(t, b.rdb, stream)[0]
		assert.Equal(t, ReasonPermanent, dl.Values[DeadLetterReasonField])
		assert.Equal(t, "result schema is wrong", dl.Values[DeadLetterErrorField])
		assert.Equal(t, int32(1), calls.Load(), "a permanent error must not be retried")
		assert.Equal(t, int64(0), pendingCount(t, b.rdb, stream, "g"))
	})
}

func TestHandlerPanicIsRecoveredAndRetried(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		var calls atomic.Int32
		h := newRecorder()
		h.fn = func(c *Completion) error {
			if calls.Add(1) == 1 {
				var m map[string]int
				m["boom"]++ // nil map write: panics
			}
			return nil
		}
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		assert.Equal(t, int64(1), h.next(t).Deliveries)
		assert.Equal(t, int64(2), h.next(t).Deliveries, "a panic counts as a failed delivery and is retried")
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked")
		assert.Equal(t, int64(1), c.Stats().Failed)
	})
}

func TestMaxDeliveriesDeadLetters(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.MaxDeliveries = 3
		h := newRecorder()
		h.fn = func(*Completion) error { return errors.New("always fails") }
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == 1 }, "not dead-lettered")
		dl := deadLetters(t, b.rdb, stream)[0]
		assert.Equal(t, ReasonMaxDeliveries, dl.Values[DeadLetterReasonField])
		assert.Equal(t, "3", dl.Values[DeadLetterDeliveriesField])
		assert.Equal(t, "always fails", dl.Values[DeadLetterErrorField])
		assert.Len(t, h.all(), 3)
		assert.Equal(t, int64(0), pendingCount(t, b.rdb, stream, "g"))
	})
}

func TestEntryOverMaxDeliveriesIsNotHandledAgain(t *testing.T) {
	// An entry whose handler crashed its process several times arrives
	// with a delivery count above the cap: it is dead-lettered without
	// calling the handler once more.
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		for _, from := range []string{">", "0", "0"} { // three "crashed" deliveries
			_, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{stream, from}, Count: 10, Block: -1}).Result()
			require.NoError(t, err)
		}
		cfg := testConfig(stream)
		cfg.MaxDeliveries = 2
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == 1 }, "not dead-lettered")
		assert.Equal(t, ReasonMaxDeliveries, deadLetters(t, b.rdb, stream)[0].Values[DeadLetterReasonField])
		assert.Empty(t, h.all())
	})
}

func TestRetryDelayGrows(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.RetryBackoff, cfg.MaxRetryBackoff = 100*time.Millisecond, time.Second
		cfg.ClaimMinIdle = 10 * time.Second // retries come from the retry timer, not XAUTOCLAIM
		var mu sync.Mutex
		var at []time.Time
		h := newRecorder()
		h.fn = func(*Completion) error {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Now())
			if len(at) < 4 {
				return errors.New("not yet")
			}
			return nil
		}
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		for i := 0; i < 4; i++ {
			h.next(t)
		}
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(at); i++ {
			want := cfg.RetryBackoff << (i - 1) // 100ms, 200ms, 400ms
			assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), want-10*time.Millisecond, "retry %d came too early", i)
		}
	})
}

func TestFailingEntriesDoNotStarveHealthyOnes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.Concurrency = 2
		cfg.RetryBackoff, cfg.MaxRetryBackoff = time.Hour, time.Hour
		cfg.ClaimMinIdle = time.Hour
		cfg.LeaseInterval = time.Minute
		const bad, good = 20, 20
		reg := registryWith(bad + good)
		var healthy atomic.Int32
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			var n int
			fmt.Sscanf(c.Message.OperationID, "op-%d", &n)
			if n <= bad {
				return errors.New("this one always fails")
			}
			healthy.Add(1)
			return nil
		})
		c := newTestConsumer(t, b.rdb, reg, h, cfg)
		startConsumer(t, c)
		for i := 1; i <= bad+good; i++ {
			publish(t, b.rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		}
		eventually(t, func() bool { return healthy.Load() == good }, "healthy entries were not all handled: %d", healthy.Load())
		st := c.Stats()
		assert.Equal(t, int64(bad), st.Retried, "each failing entry waits for its retry without holding a worker")
	})
}

func TestLeaseKeepsLongHandlerFromBeingReclaimed(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.ClaimMinIdle = 300 * time.Millisecond
		cfg.ClaimInterval = 20 * time.Millisecond
		var calls atomic.Int32
		slow := HandlerFunc(func(ctx context.Context, c *Completion) error {
			calls.Add(1)
			return hold(ctx, 3*cfg.ClaimMinIdle) // three times the min idle time
		})
		a := newTestConsumer(t, b.rdb, registryWith(1), slow, cfg)
		startConsumer(t, a)
		// A second consumer that reclaims eagerly.
		cfgB := cfg
		cfgB.Consumer = "c2"
		bc := newTestConsumer(t, b.rdb, registryWith(1), slow, cfgB)
		startConsumer(t, bc)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		eventually(t, func() bool { return a.Stats().Handled+bc.Stats().Handled == 1 }, "not handled")
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked")
		assert.Equal(t, int32(1), calls.Load(), "the handler ran more than once")
		assert.Equal(t, int64(0), a.Stats().Reclaimed+bc.Stats().Reclaimed)
	})
}

func TestDuplicateSuppression(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.DedupTTL = time.Minute
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		m := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
		publish(t, b.rdb, stream, m)
		h.next(t)
		// Acknowledged means recorded: the record is written before the ack.
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "first delivery not acked")
		// The same completion again (e.g. the producer retried, or an ack
		// was lost and the entry redelivered).
		publish(t, b.rdb, stream, m)
		eventually(t, func() bool { return c.Stats().Duplicates == 1 }, "duplicate not suppressed")
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "duplicate not acked")
		assert.Len(t, h.all(), 1)
	})
}

func TestCleanShutdownRemovesIdleConsumer(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		stop := startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		h.next(t)
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked")
		require.NoError(t, stop())
		consumers, err := b.rdb.XInfoConsumers(ctx, stream, "g").Result()
		require.NoError(t, err)
		assert.Empty(t, consumers, "a consumer holding nothing removes itself at shutdown")
	})
}

func TestShutdownKeepsConsumerThatHoldsEntries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.RetryBackoff, cfg.MaxRetryBackoff = time.Hour, time.Hour
		h := newRecorder()
		h.fn = func(*Completion) error { return errors.New("fail") }
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		stop := startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		h.next(t)
		require.NoError(t, stop())
		consumers, err := b.rdb.XInfoConsumers(ctx, stream, "g").Result()
		require.NoError(t, err)
		require.Len(t, consumers, 1)
		assert.Equal(t, int64(1), consumers[0].Pending)
	})
}

func TestStaleConsumersAreRemovedOnlyWhenTheyHoldNothing(t *testing.T) {
	b := backend{name: "redis", real: true, rdb: realClient(t)}
	// Real Redis only: miniredis's XINFO CONSUMERS has no idle times.
	ctx := context.Background()
	stream := uniqueStream(t, b.rdb)
	require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
	// "holder" read the entry and left; "empty" read nothing and left.
	_, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "holder", Streams: []string{stream, ">"}, Count: 1, Block: -1}).Result()
	require.NoError(t, err)
	require.NoError(t, b.rdb.XGroupCreateConsumer(ctx, stream, "g", "empty").Err())
	idleAtLeast(t, b.rdb, stream, "g", 20*time.Millisecond, "holder", "empty") // idle for StaleConsumerAge

	cfg := testConfig(stream)
	cfg.StaleConsumerAge = 10 * time.Millisecond
	cfg.ClaimMinIdle = time.Hour // keep "holder"'s entry where it is
	cfg.LeaseInterval = time.Minute
	c := newTestConsumer(t, b.rdb, registryWith(1), newRecorder(), cfg)
	startConsumer(t, c)
	eventually(t, func() bool {
		consumers, err := b.rdb.XInfoConsumers(ctx, stream, "g").Result()
		if err != nil {
			return false
		}
		names := map[string]bool{}
		for _, x := range consumers {
			names[x.Name] = true
		}
		return !names["empty"] && names["holder"]
	}, "the empty consumer should go, the holder stay")
}

// countingBatchRegistry is a BatchTaskRegistry over a MemoryRegistry that
// counts its calls.
type countingBatchRegistry struct {
	*MemoryRegistry
	single, batches, batchKeys atomic.Int64
}

func (r *countingBatchRegistry) LookupTask(ctx context.Context, op, task string) (Task, error) {
	r.single.Add(1)
	return r.MemoryRegistry.LookupTask(ctx, op, task)
}

func (r *countingBatchRegistry) LookupTasks(ctx context.Context, keys []TaskKey) ([]Task, []error) {
	r.batches.Add(1)
	r.batchKeys.Add(int64(len(keys)))
	tasks, errs := make([]Task, len(keys)), make([]error, len(keys))
	for i, k := range keys {
		tasks[i], errs[i] = r.MemoryRegistry.LookupTask(ctx, k.OperationID, k.TaskID)
	}
	return tasks, errs
}

func TestConsumerUsesBatchLookups(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		const n = 50
		for i := 1; i <= n; i++ {
			publish(t, b.rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		}
		publish(t, b.rdb, stream, Message{OperationID: "op-unknown", TaskID: "t-unknown", Success: true})
		reg := &countingBatchRegistry{MemoryRegistry: registryWith(n)}
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, reg, h, testConfig(stream))
		startConsumer(t, c)
		eventually(t, func() bool { st := c.Stats(); return st.Handled == n && st.DeadLettered == 1 }, "not all settled")
		assert.Equal(t, int64(0), reg.single.Load(), "a batch read must not look tasks up one by one")
		assert.Equal(t, int64(n+1), reg.batchKeys.Load())
		assert.LessOrEqual(t, reg.batches.Load(), int64(3))
	})
}

// TestLiveIdleConsumerIsNotRemoved: on Redis 7.0 a consumer that reads
// nothing looks idle to the others (its idle time counts from its last read
// that returned entries); one that announces itself in the member set is
// alive, and is never removed as departed, however small StaleConsumerAge.
func TestLiveIdleConsumerIsNotRemoved(t *testing.T) {
	rdb := realClient(t)
	ctx := context.Background()
	stream := uniqueStream(t, rdb)
	cfg := testConfig(stream)
	cfg.StaleConsumerAge = 10 * time.Millisecond
	cfg.LeaseInterval = 20 * time.Millisecond
	var passes atomic.Int64
	a := newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfg)
	a.signal = func(job string) {
		if job == "janitor" {
			passes.Add(1)
		}
	}
	startConsumer(t, a)
	cfgB := cfg
	cfgB.Consumer = "c2"
	startConsumer(t, newTestConsumer(t, rdb, registryWith(1), newRecorder(), cfgB))
	eventually(t, func() bool {
		cs, err := rdb.XInfoConsumers(ctx, stream, "g").Result()
		return err == nil && len(cs) == 2
	}, "both consumers in the group")
	idleAtLeast(t, rdb, stream, "g", 3*cfg.StaleConsumerAge, "c2")
	after := passes.Load() + 3 // a few of c1's cleanups while c2 looks stale
	eventually(t, func() bool { return passes.Load() >= after }, "c1's janitor does not run")
	cs, err := rdb.XInfoConsumers(ctx, stream, "g").Result()
	require.NoError(t, err)
	names := []string{}
	for _, c := range cs {
		names = append(names, c.Name)
	}
	assert.ElementsMatch(t, []string{"c1", "c2"}, names, "a live consumer was removed")
	members, err := rdb.ZRange(ctx, stream+":members:g", 0, -1).Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"c1", "c2"}, members)
}
