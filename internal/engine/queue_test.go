package engine

import (
	"fmt"
	"runtime"
	"testing"
	"time"

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

// A push of n deliveries wakes one idle worker, and each worker that takes
// one wakes the next: n workers that each hold on to what they took (a
// slow handler) all get one.
func TestQueueWakesAsManyWorkersAsDeliveries(t *testing.T) {
	const n = 8
	q := newQueue(1)
	got := make(chan string, n)
	release := make(chan struct{})
	defer close(release)
	for range n {
		go func() {
			d, ok := q.pop(0)
			if ok {
				got <- d.ID
			}
			<-release // holds on, like a worker in a slow handler
		}()
	}
	waitFor(t, "every worker waits in pop", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.waiting == n
	})
	var ds []*Delivery
	for i := range n {
		ds = append(ds, &Delivery{ID: fmt.Sprint(i)})
	}
	require.True(t, q.push(ds))
	seen := map[string]bool{}
	for range n {
		select {
		case id := <-got:
			seen[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d idle workers got a delivery", len(seen), n)
		}
	}
	assert.Len(t, seen, n)
	q.close()
}

// waitBelow returns once pops bring the queue down to its bound, and not
// before.
func TestQueueWaitBelowWakesAtItsBound(t *testing.T) {
	q := newQueue(1)
	var ds []*Delivery
	for i := range 5 {
		ds = append(ds, &Delivery{ID: fmt.Sprint(i)})
	}
	require.True(t, q.push(ds))
	done := make(chan bool, 1)
	go func() { done <- q.waitBelow(2) }()
	for range 2 {
		_, ok := q.pop(0)
		require.True(t, ok)
	}
	select {
	case <-done:
		t.Fatal("waitBelow(2) returned with 3 queued")
	default:
	}
	_, ok := q.pop(0)
	require.True(t, ok)
	select {
	case ok := <-done:
		assert.True(t, ok)
	case <-time.After(10 * time.Second):
		t.Fatal("waitBelow(2) did not return with 2 queued")
	}
}

// waitFor waits until cond holds, yielding to the goroutines it waits on,
// for at most 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		runtime.Gosched()
	}
}
