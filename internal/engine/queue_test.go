package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/wire"
)

func TestQueueOrderAndClose(t *testing.T) {
	q := newQueue(1)
	ds := []*Delivery{{ID: "1"}, {ID: "2"}, {ID: "3"}}
	require.True(t, q.push(ds))
	for _, want := range []string{"1", "2"} {
		d, ok := q.pop(0)
		require.True(t, ok)
		assert.Equal(t, want, d.ID)
	}
	assert.True(t, q.waitBelow(1))
	left := q.close()
	require.Len(t, left, 1)
	assert.Equal(t, "3", left[0].ID)
	_, ok := q.pop(0)
	assert.False(t, ok, "a closed queue hands out nothing")
	assert.False(t, q.push(ds), "nor takes anything")
	assert.False(t, q.waitBelow(0))
}

func TestQueueShardsKeepATasksOrder(t *testing.T) {
	q := newQueue(4)
	var ds []*Delivery
	for i := range 40 {
		ds = append(ds, &Delivery{ID: fmt.Sprint(i), Msg: wire.Message{TaskID: fmt.Sprintf("t-%d", i%5)}})
	}
	require.True(t, q.push(ds))
	shardOf := map[string]int{}
	last := map[string]int{}
	for s := range 4 {
		for {
			q.mu.Lock()
			empty := q.shards[s].head == len(q.shards[s].items)
			q.mu.Unlock()
			if empty {
				break
			}
			d, ok := q.pop(s)
			require.True(t, ok)
			task := d.Msg.TaskID
			if prev, seen := shardOf[task]; seen {
				require.Equal(t, prev, s, "task %s in two shards", task)
			}
			shardOf[task] = s
			var n int
			fmt.Sscan(d.ID, &n)
			if prev, ok := last[task]; ok {
				require.Less(t, prev, n, "task %s out of order", task)
			}
			last[task] = n
		}
	}
	assert.Len(t, last, 5)
}
