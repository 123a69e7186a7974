package completion

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
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

// partitionVector is one line of testdata/partitions.json.
type partitionVector struct {
	Stream    string `json:"stream"`
	N         int    `json:"n"`
	TaskID    string `json:"task_id"`
	Partition int    `json:"partition"`
	Key       string `json:"key"`
}

var updateVectors = flag.Bool("update-partitions", false, "rewrite testdata/partitions.json from the code")

// vectorTaskIDs are the 100 task ids of the vectors: plain, UUID-like, and
// non-ASCII ones.
func vectorTaskIDs() []string {
	ids := []string{"", "t", "task-1", "ü", "täsk-ümlaut", "任务-42", "🎉", "emoji-🎉-task", "naïve café", "ÅÄÖ"}
	for i := len(ids); i < 100; i++ {
		switch i % 3 {
		case 0:
			ids = append(ids, fmt.Sprintf("task-%d", i))
		case 1:
			ids = append(ids, fmt.Sprintf("%08x-4c1d-4e0a-9f7b-%012x", i*2654435761, i*40503))
		default:
			ids = append(ids, fmt.Sprintf("session-é%d/tool-%d", i, i*i))
		}
	}
	return ids
}

// TestPartitionVectors: the shipped vectors match the code, and the Python
// function the README shows (testdata/partition.py) reproduces every one.
func TestPartitionVectors(t *testing.T) {
	const file = "testdata/partitions.json"
	if *updateVectors {
		var vs []partitionVector
		for n := 1; n <= 8; n++ {
			for _, id := range vectorTaskIDs() {
				p := PartitionFor(id, n)
				vs = append(vs, partitionVector{Stream: DefaultStream, N: n, TaskID: id, Partition: p, Key: PartitionStream(DefaultStream, p, n)})
			}
		}
		out, err := json.MarshalIndent(vs, "", " ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(file, append(out, '\n'), 0o644))
	}
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var vs []partitionVector
	require.NoError(t, json.Unmarshal(raw, &vs))
	require.Len(t, vs, 800)
	for _, v := range vs {
		require.Equal(t, v.Partition, PartitionFor(v.TaskID, v.N), "%+v", v)
		require.Equal(t, v.Key, PartitionStream(v.Stream, v.Partition, v.N), "%+v", v)
		if v.N > 1 {
			msg := Message{OperationID: "op", TaskID: v.TaskID}
			rec := &xaddRecorder{}
			if v.TaskID != "" {
				_, err := Publish(context.Background(), rec, v.Stream, msg, WithPartitions(v.N))
				require.NoError(t, err)
				require.Equal(t, v.Key, rec.args[0].Stream, "Publish writes to the vector's key")
			}
		}
	}

	script, err := os.ReadFile("testdata/partition.py")
	require.NoError(t, err)
	got := python(t, string(script)+`
import json, sys
bad = [v for v in json.load(sys.stdin) if list(partition(v["stream"], v["task_id"], v["n"])) != [v["partition"], v["key"]]]
print(json.dumps(bad[:3]), len(bad))
`, string(raw))
	assert.Equal(t, "[] 0", got, "the Python function disagrees with the vectors")
}
