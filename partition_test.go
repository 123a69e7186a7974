package completion

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/keys"
)

func TestPartitionStreamSpreadsOverTheSlotSpace(t *testing.T) {
	for _, n := range []int{2, 3, 7, 16} {
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			key := PartitionStream("chat:completions", i, n)
			require.False(t, seen[key])
			seen[key] = true
			slot := int(keys.Slot(key))
			assert.GreaterOrEqual(t, slot, i*16384/n, "partition %d of %d", i, n)
			assert.Less(t, slot, (i+1)*16384/n, "partition %d of %d", i, n)
			assert.Equal(t, keys.Slot(key), keys.Slot(DeadLetterStreamFor(key)))
		}
	}
	assert.Equal(t, "s", PartitionStream("s", 0, 1))
}

func TestPartitionedStreamKeepsPerTaskOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := fmt.Sprintf("completion-test:partitioned:%s:%08x", b.name, rand.Uint32())
		const parts, tasks, perTask = 4, 12, 10
		t.Cleanup(func() {
			for i := 0; i < parts; i++ {
				key := PartitionStream(stream, i, parts)
				b.rdb.Del(ctx, key, DeadLetterStreamFor(key))
			}
		})
		reg := registryWith(tasks)
		var mu sync.Mutex
		order := map[string][]int{}
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			var seq int
			_, _ = fmt.Sscanf(string(c.Message.Result), `{"seq":%d}`, &seq)
			mu.Lock()
			order[c.Task.TaskID] = append(order[c.Task.TaskID], seq)
			mu.Unlock()
			return nil
		})
		cfg := testConfig(stream)
		cfg.Partitions = parts
		cfg.OrderByTask = true
		cfg.Concurrency = 8
		c := newTestConsumer(t, b.rdb, reg, h, cfg)
		startConsumer(t, c)
		for s := 0; s < perTask; s++ {
			for i := 1; i <= tasks; i++ {
				_, err := Publish(ctx, b.rdb, stream, Message{
					OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true,
					Result: []byte(fmt.Sprintf(`{"seq":%d}`, s)),
				}, WithPartitions(parts))
				require.NoError(t, err)
			}
		}
		eventually(t, func() bool { return c.Stats().Handled == tasks*perTask }, "not all handled")
		mu.Lock()
		defer mu.Unlock()
		for task, seqs := range order {
			want := make([]int, perTask)
			for i := range want {
				want[i] = i
			}
			assert.Equal(t, want, seqs, "task %s out of order", task)
		}
		used := 0
		for i := 0; i < parts; i++ {
			n, err := b.rdb.XLen(ctx, PartitionStream(stream, i, parts)).Result()
			require.NoError(t, err)
			if n > 0 {
				used++
			}
		}
		assert.Greater(t, used, 1, "completions should spread over the partitions")
	})
}

func TestPartitionsConfigValidation(t *testing.T) {
	rdb := newMini(t)
	_, err := NewConsumer(rdb, registryWith(1), newRecorder(), Config{Stream: "{tagged}", Partitions: 2})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "Partitions")
	_, err = NewConsumer(rdb, registryWith(1), newRecorder(), Config{Partitions: MaxPartitions + 1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = Publish(context.Background(), &xaddRecorder{}, "{tagged}", Message{OperationID: "o", TaskID: "t", Success: true}, WithPartitions(2))
	require.ErrorIs(t, err, ErrInvalidConfig)
}
