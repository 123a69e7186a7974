// Command prometheus serves a completion.Consumer's metrics on /metrics in
// the Prometheus format. It lives in a module of its own, so the Prometheus
// client never enters the library's go.mod.
//
//	cd examples/prometheus && go run .        # embedded miniredis unless REDIS_ADDR is set
//	curl localhost:9090/metrics | grep completion_
//
// It publishes a trickle of completions (some failing, some for unknown
// tasks) so that the metrics move.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// metrics turns consumer events into Prometheus metrics.
type metrics struct {
	events   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, c *completion.Consumer, rdb *redis.Client, stream, group string) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "completion_events_total",
			Help: "Entries by what happened to them: handled, failed, retry_scheduled, dead_lettered, reclaimed, ...",
		}, []string{"event", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "completion_handler_duration_seconds",
			Help:    "How long the completion handler ran.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.events, m.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "completion_in_flight",
			Help: "Entries held by the consumer: queued, running or waiting for their acknowledgement.",
		}, func() float64 { return float64(c.Stats().InFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "completion_up",
			Help: "1 while the consumer runs normally, 0 when degraded, stopping or stopped.",
		}, func() float64 {
			if c.State() == completion.StateRunning {
				return 1
			}
			return 0
		}),
		groupCollector{rdb: rdb, stream: stream, group: group},
	)
	return m
}

// Observe implements completion.Observer.
func (m *metrics) Observe(e completion.Event) {
	m.events.WithLabelValues(e.Kind.String(), e.Reason).Inc()
	switch e.Kind {
	case completion.EventHandled:
		m.duration.WithLabelValues("ok").Observe(e.Duration.Seconds())
	case completion.EventFailed:
		if e.Duration > 0 {
			m.duration.WithLabelValues("error").Observe(e.Duration.Seconds())
		}
	}
}

// groupCollector reports the group's lag and pending count at scrape time.
// The lag is counted, not read from XINFO GROUPS: miniredis (this example's
// embedded Redis) reports the stream's length there whatever the group has
// read, and Redis itself cannot tell after entries were deleted. Counting
// the entries after the group's last delivered id holds on both; it reads
// at most maxLagCount entries.
type groupCollector struct {
	rdb           *redis.Client
	stream, group string
}

const maxLagCount = 100_000

var (
	lagDesc     = prometheus.NewDesc("completion_group_lag", "Entries in the stream after the group's last delivered one (counted up to 100000).", nil, nil)
	pendingDesc = prometheus.NewDesc("completion_group_pending", "Entries delivered to the group and not yet acknowledged.", nil, nil)
)

func (g groupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc; ch <- pendingDesc }

func (g groupCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	groups, err := g.rdb.XInfoGroups(ctx, g.stream).Result()
	if err != nil {
		return
	}
	for _, gr := range groups {
		if gr.Name != g.group {
			continue
		}
		lag, err := g.countAfter(ctx, gr.LastDeliveredID)
		if err == nil {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag))
		}
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(gr.Pending))
	}
}

// countAfter counts the stream's entries after id, up to maxLagCount.
func (g groupCollector) countAfter(ctx context.Context, id string) (int, error) {
	n, start := 0, "("+id
	for n < maxLagCount {
		msgs, err := g.rdb.XRangeN(ctx, g.stream, start, "+", 1000).Result()
		if err != nil {
			return 0, err
		}
		n += len(msgs)
		if len(msgs) < 1000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return n, nil
}

func main() {
	addr := flag.String("addr", "localhost:9090", "metrics listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "prometheus example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	redisAddr := os.Getenv("REDIS_ADDR")
	if redisAddr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		redisAddr = mr.Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()

	const stream, group = "prometheus-example:completions", completion.DefaultGroup
	reg := &completion.MemoryRegistry{}
	for i := 0; i < 100; i++ {
		_ = reg.Register(completion.Task{TaskID: fmt.Sprintf("t-%d", i), SessionID: "s", ToolCallID: "c", OperationID: fmt.Sprintf("op-%d", i)})
	}
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		if rand.IntN(10) == 0 {
			return errors.New("downstream busy (simulated)")
		}
		return nil
	})
	promReg := prometheus.NewRegistry()
	var m *metrics
	consumer, err := completion.NewConsumer(rdb, reg, handler, completion.Config{
		Stream:       stream,
		Group:        group,
		RetryBackoff: 100 * time.Millisecond,
		Block:        time.Second,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Observer:     completion.ObserverFunc(func(e completion.Event) { m.Observe(e) }),
	})
	if err != nil {
		return err
	}
	m = newMetrics(promReg, consumer, rdb, stream, group)

	srv := &http.Server{Addr: addr, Handler: promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "metrics server:", err)
		}
	}()
	defer srv.Close()
	fmt.Printf("metrics on http://%s/metrics\n", addr)

	go func() { // the producer side: a trickle of completions
		for i := 0; ctx.Err() == nil; i++ {
			task := fmt.Sprintf("t-%d", rand.IntN(110)) // ~10% unknown tasks
			msg := completion.Message{OperationID: fmt.Sprintf("op-x-%d", i), TaskID: task, Success: rand.IntN(5) > 0, Error: ""}
			if !msg.Success {
				msg.Error = "failed (simulated)"
			}
			_, _ = completion.Publish(ctx, rdb, stream, msg)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return consumer.Run(ctx)
}
