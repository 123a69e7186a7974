package completion

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// ---------------------------------------------------------------------------
// group-destroyed

// TestFaultGroupDestroyed: an operator destroys the consumer group
// (XGROUP DESTROY) while two consumers run and the producer keeps
// publishing: once while nothing is pending, once while entries are
// pending (their pending list goes with the group). The stream stays, so
// nothing may be lost: the consumers recreate the group from the first
// entry and read the whole stream again. That re-reads what was handled
// already, so duplicates are expected and reported (DedupTTL would skip
// them); an entry pending at the destruction is handled again, not lost.
func TestFaultGroupDestroyed(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 900 * scale
	destroys := faultCount(2, scale)
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:groupdestroyed"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.Concurrency, cfg.BatchSize = 4, 20
		c := newTestConsumer(t, faultClient(t, srv.Addr(), nil), anyTaskRegistry, recordingHandler(led, name, 2*time.Millisecond, 8*time.Millisecond), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends a publishing goroutine if the test fails
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "gd"}
	burst := &faultPublisher{rdb: pub.rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "gdburst"}
	const rate = 400.0
	segment := func(k int) { // the k-th part of the ids, paced
		start := time.Now()
		for i := n * k / (destroys + 1); i < n*(k+1)/(destroys+1); i++ {
			if !pace(ctx, start, i-n*k/(destroys+1), rate) || !pub.publish(ctx, i, 0) {
				return
			}
		}
	}

	withPending, bursts := 0, 0
	for k := 0; k < destroys; k++ {
		var pending int64
		var done chan struct{}
		if k%2 == 0 {
			// With nothing pending: the consumers caught up, the producer
			// is between two publishes.
			segment(k)
			require.True(t, waitProgress(30*time.Second, func() bool {
				pending = pendingOf(check, stream, "g")
				return pending == 0
			}), "destroy %d: entries stay pending", k+1)
		} else {
			// With entries pending: while the producer publishes, and a
			// burst the consumers are working on.
			done = make(chan struct{})
			go func() { defer close(done); segment(k) }()
			for j := range 80 {
				require.True(t, burst.publish(ctx, bursts*80+j, 0))
			}
			bursts++
			require.True(t, waitProgress(30*time.Second, func() bool {
				pending = pendingOf(check, stream, "g")
				return pending >= 10
			}), "destroy %d: nothing pending", k+1)
			withPending++
		}
		require.NoError(t, check.XGroupDestroy(ctx, stream, "g").Err())
		t.Logf("destroy %d: XGROUP DESTROY after %d publishes, with %d entries pending", k+1, led.count(), pending)
		// A consumer recreates it before the next one.
		require.True(t, waitProgress(30*time.Second, func() bool {
			gs, err := check.XInfoGroups(ctx, stream).Result()
			return err == nil && len(gs) == 1
		}), "the group was not recreated")
		if done != nil {
			<-done
		}
	}
	segment(destroys)
	settle(t, check, stream, led, faultWait(3*n), nil)
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	res := finishScenario(t, check, consumers[0], "group-destroyed", led, destroys, nil)
	assert.Positive(t, withPending, "no destruction with entries pending")
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}
