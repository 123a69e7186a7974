package completion

import (
	"context"
	"fmt"
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
	for _, conc := range []int{1, DefaultConcurrency} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
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
			for i := 0; i < b.N; i++ {
				m := Message{OperationID: fmt.Sprintf("op-%d", i%tasks), TaskID: fmt.Sprintf("t-%d", i%tasks), Success: true, Result: []byte(`{"pages":3}`)}
				data, _ := m.MarshalJSON()
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, data}})
				if pipe.Len() == 1000 {
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if _, err := pipe.Exec(ctx); err != nil && pipe.Len() > 0 {
				b.Fatal(err)
			}
			var handled atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			h := HandlerFunc(func(ctx context.Context, c *Completion) error {
				if handled.Add(1) == n {
					close(done)
				}
				return nil
			})
			cfg := Config{Stream: stream, Group: "g", Consumer: "c", Concurrency: conc, BatchSize: 500, Logger: quietLogger()}
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
				b.Fatal("not drained")
			}
			// Wait for the last acks.
			for {
				p, err := rdb.XPending(ctx, stream, "g").Result()
				if err == nil && p.Count == 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cancel()
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
