package engine

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// countingProcessor acknowledges everything, counting deliveries per id,
// the largest batch Prefetch saw, and the most bytes the engine held while
// a delivery was processed.
type countingProcessor struct {
	e *Engine

	mu        sync.Mutex
	seen      map[string]int
	maxCount  int64
	batch     int
	heldPeak  int64
	delivered chan struct{}
}

func (p *countingProcessor) Prefetch(_ context.Context, ds []*Delivery) {
	p.mu.Lock()
	p.batch = max(p.batch, len(ds))
	p.mu.Unlock()
}

func (p *countingProcessor) Process(_ context.Context, d *Delivery) Outcome {
	held := p.e.held.heldBytes()
	p.mu.Lock()
	p.seen[d.ID]++
	p.maxCount = max(p.maxCount, d.Count)
	p.heldPeak = max(p.heldPeak, held)
	p.mu.Unlock()
	p.delivered <- struct{}{}
	return Outcome{Kind: Ack}
}

// TestCappedReadsGrowWithSmallEntriesAndHoldTheBudget: on real Redis, the
// blocking reader's replies are capped at the read-ahead budget's free
// part, so reads are planned at the size of the entries seen. A backlog of
// small entries is read up to BatchSize at a time, where planning at
// MaxPayloadBytes would allow 4; a burst of large entries behind them in
// the backlog (5x the budget) is cut off at the budget and taken from the
// pending list, so the engine never holds much more than the budget, and
// every entry is handled exactly once, as its first delivery (the re-read
// from the pending list counts as a delivery in Redis, not to a handler).
func TestCappedReadsGrowWithSmallEntriesAndHoldTheBudget(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	stream := fmt.Sprintf("engine:capped:%d", time.Now().UnixNano())
	t.Cleanup(func() { rdb.Del(context.Background(), stream) })

	const budget, small, large, nSmall, nLarge = 4 << 20, 200, 512 << 10, 3000, 40
	p := &countingProcessor{seen: map[string]int{}, delivered: make(chan struct{}, nSmall+nLarge)}
	var capped sync.Once
	cut := make(chan struct{})
	e := New(Params{
		Client: rdb, Stream: stream, DeadLetterStream: stream + ":dead", Group: "g", Consumer: "c",
		Settings: Settings{
			Block: time.Second, ClaimMinIdle: time.Minute, ClaimInterval: time.Minute, LeaseInterval: 20 * time.Second,
			AckDelay: time.Millisecond, ShutdownTimeout: 5 * time.Second, ErrorBackoff: time.Millisecond, MaxErrorBackoff: 10 * time.Millisecond,
			StaleConsumerAge: time.Hour, BatchSize: 500, Concurrency: 2, MaxPayloadBytes: 1 << 20, MaxIDBytes: 512,
			MaxErrorBytes: 1 << 16, MaxReadAheadBytes: budget,
		},
		Processor: p, Stats: &Stats{}, Log: slog.New(slog.DiscardHandler),
		ErrRedisFatal: errFatal, ErrStartTimeout: errStart, ErrShutdownTimeout: errShutdown,
		Signal: func(job string) {
			if job == "read-capped" {
				capped.Do(func() { close(cut) })
			}
		},
	})
	p.e = e
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	publish := func(n, size int) {
		t.Helper()
		_, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for range n {
				pl.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"data", strings.Repeat("x", size)}})
			}
			return nil
		})
		require.NoError(t, err)
	}
	wait := func(n int, what string) {
		t.Helper()
		for i := range n {
			select {
			case <-p.delivered:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: %d of %d delivered", what, i, n)
			}
		}
	}

	// The burst follows the small entries in one backlog, so that a read
	// planned for small entries meets it.
	publish(nSmall, small)
	publish(nLarge, large)
	runEngine(t, e)
	wait(nSmall+nLarge, "entries")
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatal("no read was cut at the budget")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	assert.Greater(t, p.batch, 64, "reads of small entries grow past what planning at MaxPayloadBytes allows (%d)", budget/(1<<20))
	assert.Len(t, p.seen, nSmall+nLarge)
	for id, n := range p.seen {
		if n != 1 {
			t.Errorf("entry %s delivered %d times", id, n)
		}
	}
	assert.LessOrEqual(t, p.heldPeak, int64(budget+2*large), "held beyond the budget")
	assert.Equal(t, int64(1), p.maxCount, "a cut read's entries are handed over as first deliveries")
}

// The private client keeps the client's timeouts: Options() holds them
// normalised, and a second normalisation would turn "none" into 5s.
func TestCappedClientKeepsTheTimeouts(t *testing.T) {
	for _, tc := range []struct{ read, write time.Duration }{{-1, -1}, {-2, -2}, {0, 0}, {3 * time.Second, time.Second}} {
		user := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: tc.read, WriteTimeout: tc.write})
		priv := newCappedClient(user.Options(), &byteCap{})
		assert.Equal(t, user.Options().ReadTimeout, priv.Options().ReadTimeout, "ReadTimeout %v", tc.read)
		assert.Equal(t, user.Options().WriteTimeout, priv.Options().WriteTimeout, "WriteTimeout %v", tc.write)
		_ = priv.Close()
		_ = user.Close()
	}
}
