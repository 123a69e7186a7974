package completion

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkConsumerDrain drains b.N pre-published messages through one
// Consumer on a real Redis (REDIS_ADDR or a spawned server): read, decode,
// registry lookup, no-op handler, batched ack. allocs/op is allocations per
// message, for the whole process (go-redis included).
func BenchmarkConsumerDrain(b *testing.B) {
	for _, conc := range []int{1, defaultConcurrency} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			benchDrain(b, conc, b.N, 0)
		})
	}
}

// BenchmarkPoisonFlood shows what poison entries cost healthy ones: b.N
// healthy messages alone, b.N poison entries alone (each dead-lettered),
// and both interleaved (50% poison). The mixed drain should take about as
// long as the two alone together: poison costs its dead-lettering, nothing
// more. Compare the ns/op of the three.
func BenchmarkPoisonFlood(b *testing.B) {
	b.Run("healthy", func(b *testing.B) { benchDrain(b, defaultConcurrency, b.N, 0) })
	b.Run("poison", func(b *testing.B) { benchDrain(b, defaultConcurrency, 0, b.N) })
	b.Run("mixed", func(b *testing.B) { benchDrain(b, defaultConcurrency, b.N, b.N) })
}

// benchDrain publishes healthy messages and poison entries interleaved,
// then times one consumer draining them all: healthy ones handled and
// acknowledged, poison dead-lettered.
func benchDrain(b *testing.B, conc, healthy, poison int) {
	rdb := redis.NewClient(&redis.Options{Addr: sharedRedisAddr(b)})
	defer rdb.Close()
	ctx := context.Background()
	stream := uniqueStream(b, rdb)
	reg := &MemoryRegistry{}
	const tasks = 1000
	for i := 0; i < tasks; i++ {
		reg.Register(Task{TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "tc", OperationID: fmt.Sprintf("op-%d", i)})
	}
	pipe := rdb.Pipeline()
	for i := 0; i < max(healthy, poison); i++ {
		if i < healthy {
			m := Message{OperationID: fmt.Sprintf("op-%d", i%tasks), TaskID: fmt.Sprintf("t-%d", i%tasks), Success: true, Result: []byte(`{"pages":3}`)}
			data, _ := m.MarshalJSON()
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, data}})
		}
		if i < poison {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, `{"operation_id":"op-1","task_id":`}})
		}
		if pipe.Len() >= 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	h := HandlerFunc(func(ctx context.Context, c *Completion) error { return nil })
	var handled, deadLettered atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	observe := ObserverFunc(func(e Event) {
		switch e.Kind {
		case EventHandled:
			handled.Add(1)
		case EventDeadLettered:
			deadLettered.Add(1)
		default:
			return
		}
		if handled.Load() == int64(healthy) && deadLettered.Load() == int64(poison) {
			once.Do(func() { close(done) })
		}
	})
	cfg := Config{Stream: stream, Group: "g", Consumer: "c", Concurrency: conc, Logger: quietLogger(), Observer: observe}
	c, err := NewConsumer(rdb, reg, h, cfg)
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { runErr <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("not drained: %+v", c.Stats())
	}
	b.StopTimer()
	cancel()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	if p, err := rdb.XPending(ctx, stream, "g").Result(); err != nil || p.Count != 0 {
		b.Fatalf("entries left pending after the drain: %v %v", p, err)
	}
	if n := healthy + poison; n > 0 {
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
	}
}
