package completion

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// ---------------------------------------------------------------------------
// slow-redis

// TestFaultSlowRedis: Redis stops answering for 3 s at a time (DEBUG SLEEP
// 3, as a slow command or a fork on a big dataset would), again and again,
// while two consumers run with 1 s read and write timeouts (their calls
// time out during each sleep, and go-redis retries them) and the producer
// publishes. ClaimMinIdle (6 s) outlasts a sleep plus a lease
// interval, so no entry is taken over: nothing may be lost, and no
// duplicate is expected (a read whose reply timed out is recovered from the
// own pending list, an acknowledgement that timed out is sent again). The
// last sleep catches the consumers stopping: Run must still return within
// its bound.
func TestFaultSlowRedis(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	sleeps := faultCount(3, scale)
	srv := redistest.Start(t, redistest.Options{Args: []string{"--enable-debug-command", "yes"}})
	stream := "faults:slow"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)
	sleeper := faultClient(t, srv.Addr(), func(o *redis.Options) { o.ReadTimeout = 10 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.ClaimMinIdle, cfg.LeaseInterval = 6*time.Second, 500*time.Millisecond
		rdb := faultClient(t, srv.Addr(), func(o *redis.Options) { o.ReadTimeout, o.WriteTimeout = time.Second, time.Second })
		c := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, name, 0, 3*time.Millisecond), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}
	n := 200 * (sleeps + 1)
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "slow"}
	pubDone := pub.run(ctx, n, float64(n)/(4.5*float64(sleeps)))
	defer func() { cancel(); <-pubDone }()

	debugSleep := func() {
		if err := sleeper.Do(ctx, "DEBUG", "SLEEP", "3").Err(); err != nil {
			t.Errorf("DEBUG SLEEP: %v", err)
		}
	}
	for k := 0; k < sleeps; k++ {
		faultHold(randBetween(500*time.Millisecond, 1500*time.Millisecond))
		debugSleep() // returns when Redis answers again
		t.Logf("sleep %d: Redis did not answer for 3s, after %d publishes", k+1, pub.done.Load())
	}
	<-pubDone
	settle(t, check, stream, led, faultWait(n), nil)

	// One more sleep, and the consumers stop in the middle of it.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); debugSleep() }()
	faultHold(300 * time.Millisecond)
	var stopWG sync.WaitGroup
	for i, stop := range stops {
		stopWG.Add(1)
		go func() {
			defer stopWG.Done()
			began := time.Now()
			err := stop()
			took := time.Since(began)
			assert.NoError(t, err, "c%d: Run's error", i+1)
			assert.LessOrEqual(t, took, bound(consumers[i].Config())+runStopMargin, "c%d: Run returned %v after its context was cancelled", i+1, took)
			t.Logf("c%d: stopped during a DEBUG SLEEP; Run returned after %v", i+1, took.Round(time.Millisecond))
		}()
	}
	stopWG.Wait()
	wg.Wait()
	logConsumerStats(t, consumers)
	checkLeaseAccounting(t, consumers)
	var redisErrors int64
	for _, c := range consumers {
		redisErrors += c.Stats().RedisErrors
	}
	res := finishScenario(t, check, consumers[0], "slow-redis", led, sleeps+1, nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
	assert.Zero(t, res.duplicates, "duplicates without a takeover")
	require.Positive(t, redisErrors, "no Redis call timed out: the sleeps did not bite")
}
