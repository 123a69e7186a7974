package completion

// Fault-injection suite. Each scenario starts its own redis-server
// (internal/redistest), publishes completions under a ledger of every
// operation id, injects one kind of fault while consumers run, and then
// checks the ledger: every published id handled at least once, or
// dead-lettered with the intended reason; none lost; duplicates counted.
// Each prints one line:
//
//	FAULTS scenario=<name> published=<n> handled=<n> deadlettered=<n> lost=<n> duplicates=<n> faults=<n> excused=<n>
//
// handled and deadlettered count distinct published ids; lost counts ids
// without their intended outcome that the scenario does not excuse; excused
// counts ids whose loss the scenario attributes to an operator action
// (stream-deleted: deleted with the stream; trim-backlog: trimmed by MAXLEN
// and accounted as such; sentinel-failover: acknowledged by a master that
// died before replicating them), so published = handled + deadlettered +
// lost + excused for scenarios where no id is both. duplicates counts
// successful handler calls beyond the first per entry (plus extra dead
// letters).
//
// The first seven scenarios are in this file; the others each in a
// faults_<topic>_test.go of their own (shutdown, pause, sentinel, oom,
// group, churn, registry, slow, memory). Consumers that are killed, frozen
// or measured run in child processes (faults_child_test.go).
//
// Sizes: the default run is part of `go test -race ./...`; COMPLETION_SOAK=1
// scales every scenario by faultSoakScale (over 100k messages in all), and
// COMPLETION_SOAK=N by N. Every wait is on an event or a condition with a
// generous timeout; no wall time is asserted but Run's documented
// shutdown bound (shutdown-frozen-redis, slow-redis).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// failsFirstCall reports whether the scenario's handler fails the first
// call for this operation (one in 13), so that faults also meet entries
// waiting for a retry.
func failsFirstCall(opID string) bool {
	i, err := strconv.Atoi(opID[strings.LastIndexByte(opID, '-')+1:])
	return err == nil && i%13 == 7
}

// recordingHandler records every call and every success in the ledger; it
// fails the first call of some operations (failsFirstCall), and sleeps for
// a while so that faults catch handlers mid-run.
func recordingHandler(led *faultLedger, consumer string, lo, hi time.Duration) HandlerFunc {
	return func(ctx context.Context, c *Completion) error {
		call := led.called(c.Message.OperationID)
		led.trace(c.Message.OperationID, consumer, c)
		if call == 1 && failsFirstCall(c.Message.OperationID) {
			return errors.New("transient failure of the first call")
		}
		if hi > 0 {
			select {
			case <-time.After(randBetween(lo, hi)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		led.handled(c.Message.OperationID, c.EntryID)
		return nil
	}
}

// pendingOf returns the group's pending count (-1 on error).
func pendingOf(rdb *redis.Client, stream, group string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := rdb.XPending(ctx, stream, group).Result()
	if err != nil {
		return -1
	}
	return p.Count
}

// settle waits until every id that wants handling was handled (sync, if
// not nil, refreshes the ledger first) and nothing is pending in the group.
// It reports whether that happened within d.
func settle(t *testing.T, rdb *redis.Client, stream string, led *faultLedger, d time.Duration, sync func()) bool {
	t.Helper()
	ok := waitProgress(d, func() bool {
		if sync != nil {
			sync()
		}
		return led.unhandled() == 0 && pendingOf(rdb, stream, "g") == 0
	})
	if !ok {
		t.Errorf("not settled within %v: %d ids not handled, %d entries pending", d, led.unhandled(), pendingOf(rdb, stream, "g"))
	}
	return ok
}

// stopAll stops the consumers and checks that Run returned nil.
func stopAll(t *testing.T, stops ...func() error) {
	t.Helper()
	for _, stop := range stops {
		assert.NoError(t, stop(), "Run's error")
	}
}

// logConsumerStats logs each consumer's counters.
func logConsumerStats(t *testing.T, consumers []*Consumer) {
	t.Helper()
	for i, c := range consumers {
		st := c.Stats()
		t.Logf("c%d stats: delivered=%d succeeded=%d reclaimed=%d leases_lost=%d redis_errors=%d", i+1,
			st.Delivered, st.Handled, st.Reclaimed, st.LeasesLost, st.RedisErrors)
	}
}

// checkLeaseAccounting checks Stats().LeasesLost against takeovers: an
// entry a consumer loses was taken over by another consumer's XAUTOCLAIM,
// which counts it in that consumer's Reclaimed. So no consumer can have
// lost more leases than the others reclaimed in all.
func checkLeaseAccounting(t *testing.T, consumers []*Consumer) {
	t.Helper()
	for i, c := range consumers {
		lost, others := c.Stats().LeasesLost, int64(0)
		for j, o := range consumers {
			if j != i {
				others += o.Stats().Reclaimed
			}
		}
		assert.LessOrEqual(t, lost, others,
			"%s: Stats().LeasesLost counts %d entries taken over, but the other consumers reclaimed only %d",
			c.Config().Consumer, lost, others)
	}
}

// finishScenario reads the dead letters (of c's dead-letter stream), evaluates the ledger, prints the
// FAULTS line and asserts that nothing was lost.
func finishScenario(t *testing.T, rdb *redis.Client, c *Consumer, name string, led *faultLedger, faults int,
	excuse func(*ledgerRec, bool, int) string) faultResult {
	t.Helper()
	dls, err := readDeadLetters(context.Background(), rdb, c.Config().DeadLetterStream)
	require.NoError(t, err)
	res := led.evaluate(name, dls, excuse)
	res.faults = faults
	res.report(t)
	assert.Zero(t, res.lost, "lost ids")
	assert.NotZero(t, res.published, "nothing was published")
	return res
}

// ---------------------------------------------------------------------------
// 1. consumer-sigkill

// TestFaultConsumerProcess is the child consumer process of the scenarios
// that kill, stop or freeze consumers: the test binary re-executes itself
// with COMPLETION_FAULT_CHILD=1 and this test only. It runs a Consumer
// configured by a childSpec (faults_child_test.go; TestFaultConsumerSigkill
// passes its own environment variables instead): its handler sleeps, then
// records the success (a Redis list, a ledger file), until the parent
// SIGKILLs it, SIGTERMs it or closes its stdin.
func TestFaultConsumerProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process of the fault scenarios; runs only when re-executed with " + childEnv + "=1")
	}
	spec := childLegacySpec()
	if js := os.Getenv(childEnvSpec); js != "" {
		spec = childSpec{}
		require.NoError(t, json.Unmarshal([]byte(js), &spec))
	}
	runSpecChild(t, spec) // until the parent closes stdin or exits, or SIGTERM
}

// TestFaultConsumerSigkill: consumer processes are SIGKILLed while their
// handlers run; an in-process consumer with a short ClaimMinIdle, and a
// reborn child under a dead one's name, take their entries over. Delivery
// is at least once: an entry handled but not yet acknowledged when its
// process died is handled again, so duplicates are counted, not forbidden.
func TestFaultConsumerSigkill(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 600 * scale
	kills := faultCount(3, scale)
	srv := redistest.Start(t, redistest.Options{})
	rdb := faultClient(t, srv.Addr(), nil)
	stream := "faults:sigkill"
	handledKey := stream + ":handled"
	led := newFaultLedger()
	list := &handledListReader{key: handledKey}
	syncList := func() {
		if err := list.sync(context.Background(), rdb, led); err != nil {
			t.Logf("read the children's handled list: %v", err)
		}
	}

	// The survivor: in-process, short ClaimMinIdle, takes over what the
	// killed children held.
	cfg := faultConfig(stream, "survivor", faultLogger(t, "survivor"))
	cfg.ClaimMinIdle, cfg.ClaimInterval = time.Second, 100*time.Millisecond
	cfg.Concurrency = 2
	survivor := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, "survivor", 2*time.Millisecond, 6*time.Millisecond), cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &faultPublisher{rdb: rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "kill"}
	// A backlog first, so that the first child starts busy; then a steady
	// flow over the kill rounds.
	for i := 0; i < n/5; i++ {
		require.True(t, pub.publish(ctx, i, 0))
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		rate := float64(n) / (1.5 * float64(kills+1))
		start := time.Now()
		for i := n / 5; i < n; i++ {
			if !pace(ctx, start, i-n/5, rate) || !pub.publish(ctx, i, 0) {
				return
			}
		}
	}()
	defer func() { cancel(); <-pubDone }()

	burst := &faultPublisher{rdb: rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "killburst"}
	const killBurst = 50
	var stopSurvivor func() error
	heldAtKill := int64(0)
	for k := 0; k < kills; k++ {
		// Every second child reuses the name of the one killed before it,
		// so it re-reads its own pending entries first.
		name := fmt.Sprintf("victim-%d", k/2)
		child := startChild(t, map[string]string{
			childEnvAddr:        srv.Addr(),
			childEnvStream:      stream,
			childEnvConsumer:    name,
			childEnvHandled:     handledKey,
			childEnvSleep:       "5-20",
			childEnvConcurrency: "8",
			childEnvMinIdle:     "1000",
		})
		before, err := rdb.LLen(ctx, handledKey).Result()
		require.NoError(t, err)
		// A burst, so that the child holds many entries when it dies.
		for j := 0; j < killBurst; j++ {
			require.True(t, burst.publish(ctx, k*killBurst+j, 0))
		}
		// Kill it once it has handled a few entries: it is then busy
		// with more (a backlog, 8 handlers sleeping 5-20 ms).
		busy := waitProgress(60*time.Second, func() bool {
			l, err := rdb.LLen(ctx, handledKey).Result()
			return err == nil && l >= before+15
		})
		if !busy {
			t.Logf("kill %d: child %s handled fewer than 15 entries in 60s; killing it anyway", k+1, name)
		}
		child.kill()
		checkChildOutput(t, child)
		held := int64(0)
		if p, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 100000, Consumer: name}).Result(); err == nil {
			held = int64(len(p))
		}
		heldAtKill += held
		t.Logf("kill %d: SIGKILLed child %s holding %d pending entries", k+1, name, held)
		if stopSurvivor == nil {
			stopSurvivor = startConsumer(t, survivor)
		}
	}
	assert.Positive(t, heldAtKill, "no child was killed while holding entries")

	<-pubDone
	settle(t, rdb, stream, led, faultWait(n), syncList)
	stopAll(t, stopSurvivor)
	syncList()
	st := survivor.Stats()
	t.Logf("survivor stats: delivered=%d succeeded=%d reclaimed=%d leases_lost=%d redis_errors=%d",
		st.Delivered, st.Handled, st.Reclaimed, st.LeasesLost, st.RedisErrors)
	res := finishScenario(t, rdb, survivor, "consumer-sigkill", led, kills, nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 2. redis-restart

// TestFaultRedisRestart: Redis with appendfsync always is SIGKILLed and
// restarted while two consumers run and a producer keeps publishing (it
// retries its failed publishes; a publish counts once Publish returned an
// id). Every acknowledged write survives, so every published id must be
// handled. Duplicates are allowed (at least once) and counted.
func TestFaultRedisRestart(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 1000 * scale
	restarts := faultCount(2, scale)
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	stream := "faults:restart"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		rdb := faultClient(t, srv.Addr(), nil)
		c := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, name, 0, 2*time.Millisecond), faultConfig(stream, name, faultLogger(t, name)))
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "restart"}
	pubDone := pub.run(ctx, n, float64(n)/(1.5*float64(restarts+1)))
	defer func() { cancel(); <-pubDone }()

	for k := 0; k < restarts; k++ {
		target := int64(n * (k + 1) / (restarts + 1))
		require.True(t, waitProgress(faultWait(n), func() bool { return pub.done.Load() >= target }), "publishing stalled")
		srv.Kill()
		faultHold(randBetween(time.Second, 2*time.Second)) // outlasts go-redis's own retries
		srv.Restart()
		t.Logf("restart %d: Redis killed and restarted after %d publishes", k+1, target)
	}
	<-pubDone
	// appendfsync always: every entry whose XADD returned an id is there.
	xlen, err := check.XLen(ctx, stream).Result()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, xlen, int64(led.count()), "acknowledged publishes lost by the restart")

	settle(t, check, stream, led, faultWait(n), nil)
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	checkLeaseAccounting(t, consumers)
	res := finishScenario(t, check, consumers[0], "redis-restart", led, restarts, nil)
	t.Logf("publish attempts failed: %d; publishes retried: %d; entries in the stream: %d for %d published ids (extra entries: publishes whose reply the crash lost, retried)",
		pub.failures.Load(), pub.retried.Load(), xlen, led.count())
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 3. redis-pause

// TestFaultRedisPause: Redis is frozen (SIGSTOP) for longer than the
// consumers' read and write timeouts (300 ms), then resumed. While frozen,
// Redis's clock still runs, so after SIGCONT entries held by one consumer
// may look idle longer than ClaimMinIdle to the other: duplicates are
// allowed (a paused pod's entry may be reclaimed) and counted.
func TestFaultRedisPause(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 800 * scale
	pauses := []time.Duration{}
	for k := 0; k < faultCount(2, scale); k++ {
		pauses = append(pauses, randBetween(time.Second, 1600*time.Millisecond))
	}
	if scale > 1 {
		// Longer than a blocked read's deadline (Block + 10 s).
		pauses = append(pauses, 11500*time.Millisecond)
	}
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:pause"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		rdb := faultClient(t, srv.Addr(), func(o *redis.Options) {
			o.ReadTimeout, o.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
		})
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.ClaimMinIdle = 3 * time.Second
		c := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, name, 0, 3*time.Millisecond), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "pause"}
	pubDone := pub.run(ctx, n, float64(n)/(1.5*float64(len(pauses)+1)))
	defer func() { cancel(); <-pubDone }()

	for k, d := range pauses {
		target := int64(n * (k + 1) / (len(pauses) + 1))
		require.True(t, waitProgress(faultWait(n), func() bool { return pub.done.Load() >= target }), "publishing stalled")
		srv.Pause()
		faultHold(d)
		srv.Resume()
		t.Logf("pause %d: Redis frozen for %v after %d publishes", k+1, d.Round(time.Millisecond), target)
	}
	<-pubDone
	settle(t, check, stream, led, faultWait(n), nil)
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	checkLeaseAccounting(t, consumers)
	res := finishScenario(t, check, consumers[0], "redis-pause", led, len(pauses), nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 4. connection-cut

// TestFaultConnectionCut: two consumers reach Redis through a proxy that
// cuts every connection several times, and refuses new ones for a while.
// No process dies and no entry is idle for anywhere near ClaimMinIdle (the
// leases renew every 500 ms, the outages last at most a second), so the
// design promises no duplicates: an acknowledgement lost with a cut
// connection is retried, and an entry delivered by a read whose reply was
// cut is recovered from the consumer's own pending list, handled once.
func TestFaultConnectionCut(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 1000 * scale
	cuts := faultCount(6, scale)
	refusals := faultCount(3, scale)
	srv := redistest.Start(t, redistest.Options{})
	proxy := redistest.NewProxy(t, srv.Addr())
	stream := "faults:cut"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		rdb := faultClient(t, proxy.Addr(), func(o *redis.Options) { o.DialTimeout = time.Second })
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.ClaimMinIdle, cfg.LeaseInterval = 6*time.Second, 500*time.Millisecond
		c := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, name, 0, 3*time.Millisecond), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "cut"}
	total := cuts + refusals
	pubDone := pub.run(ctx, n, float64(n)/(0.5*float64(total+1)))
	defer func() { cancel(); <-pubDone }()

	burst := &faultPublisher{rdb: pub.rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "cutburst"}
	const cutBurst = 100
	bursts := 0
	cutConns := 0
	for k := 0; k < total; k++ {
		target := int64(n * (k + 1) / (total + 1))
		require.True(t, waitProgress(faultWait(n), func() bool { return pub.done.Load() >= target }), "publishing stalled")
		if k%(total/refusals) == total/refusals-1 {
			// A burst first, so that many entries are being handled or
			// acknowledged when the connections go.
			for j := 0; j < cutBurst; j++ {
				require.True(t, burst.publish(ctx, bursts*cutBurst+j, 0))
			}
			bursts++
			proxy.SetRefuse(true)
			cutConns += proxy.CutAll()
			faultHold(time.Second)
			proxy.SetRefuse(false)
			t.Logf("fault %d: connections cut and refused for 1s after %d publishes", k+1, target)
			continue
		}
		c := proxy.CutAll()
		cutConns += c
		t.Logf("fault %d: %d connections cut after %d publishes", k+1, c, target)
	}
	<-pubDone
	settle(t, check, stream, led, faultWait(n), nil)
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	assert.Positive(t, cutConns, "no connection was cut")
	checkLeaseAccounting(t, consumers)
	res := finishScenario(t, check, consumers[0], "connection-cut", led, total, nil)
	assert.Zero(t, res.duplicates, "duplicates without a crash, with leases renewed")
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 5. stream-deleted

// TestFaultStreamDeleted: an operator DELs the stream key (and with it the
// group) several times while two consumers run and the producer keeps
// publishing.
//
// The ledger rule: the producer itself deletes the stream between two of
// its publishes, so every publish is known to come before or after each
// deletion; its epoch is the number of deletions done before it started.
//
//   - An id of the last epoch (published after the last deletion) must be
//     handled: the consumers recreate the group from id 0, so even entries
//     added before the group is recreated are read.
//   - An id of an earlier epoch e was destroyed by deletion e+1 unless it
//     had been handled by then. If it was handled (at any time: a handler
//     running at the deletion may finish after it) it counts as handled;
//     otherwise it is excused, lost by the operator's hand, not by the
//     library, and counted in excused.
func TestFaultStreamDeleted(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 1000 * scale
	deletions := faultCount(3, scale)
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:deleted"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		rdb := faultClient(t, srv.Addr(), nil)
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.Concurrency, cfg.BatchSize = 4, 20
		c := newTestConsumer(t, rdb, anyTaskRegistry, recordingHandler(led, name, 2*time.Millisecond, 8*time.Millisecond), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	operator := faultClient(t, srv.Addr(), nil)
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "del"}
	var epoch atomic.Int64
	var delErr error
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		// Steady traffic, except around each deletion: a burst just before
		// it (so that the consumers hold entries, running or queued, and
		// have a backlog when the stream goes) and just after it (so that
		// new entries get ids of the same millisecond as deleted ones, which
		// the consumers may still hold).
		const burst = 60
		rate := float64(n) / (1.0 * float64(deletions+1))
		start := time.Now()
		next := 1
		for i := 0; i < n; i++ {
			point := n * next / (deletions + 1)
			if next <= deletions && i == point {
				if err := operator.Del(ctx, stream).Err(); err != nil {
					delErr = err
					return
				}
				epoch.Add(1)
				next++
			}
			prev := n * (next - 1) / (deletions + 1) // the last deletion's point (0 before the first)
			inBurst := (next <= deletions && point-i <= burst) || (next > 1 && i-prev < burst)
			if !inBurst && !pace(ctx, start, i, rate) {
				return
			}
			if !pub.publish(ctx, i, int(epoch.Load())) {
				return
			}
		}
	}()
	defer func() { cancel(); <-pubDone }()
	<-pubDone
	require.NoError(t, delErr, "DEL")
	last := int(epoch.Load())

	// Ids of the last epoch must all be handled; earlier ones only if
	// they were handled before their stream was deleted.
	ok := waitProgress(faultWait(n), func() bool {
		for _, r := range led.records() {
			if r.epoch == last && led.handledCount(r.key) == 0 {
				return false
			}
		}
		return pendingOf(check, stream, "g") == 0
	})
	if !ok {
		t.Errorf("not settled: ids of the last epoch unhandled, or entries pending (%d)", pendingOf(check, stream, "g"))
	}
	stopAll(t, stops...)
	for i, c := range consumers {
		st := c.Stats()
		t.Logf("c%d stats: delivered=%d succeeded=%d reclaimed=%d leases_lost=%d deleted_while_pending=%d redis_errors=%d", i+1,
			st.Delivered, st.Handled, st.Reclaimed, st.LeasesLost, st.DeletedWhilePending, st.RedisErrors)
	}
	checkLeaseAccounting(t, consumers)
	res := finishScenario(t, check, consumers[0], "stream-deleted", led, last, func(r *ledgerRec, handled bool, _ int) string {
		if !handled && r.epoch < last {
			return "published before a deletion, not handled before it"
		}
		return ""
	})
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 6. trim-backlog

// TestFaultTrimBacklog: the producer publishes with a small MAXLEN while the
// consumer is slow and fails some deliveries (retried later), so MAXLEN
// trims entries that were never delivered and entries that are pending,
// waiting for their retry. Every id must be handled, or be trimmed and
// accounted for as such:
//
//   - an id whose entry is still in the stream (id >= the first entry's id
//     at the end) must be handled;
//   - a trimmed id whose handler was never called was never delivered:
//     MAXLEN removed it from the backlog (the library cannot see these);
//   - a trimmed id whose handler was called but never succeeded was
//     deleted while pending: the consumer must count it in
//     Stats().DeletedWhilePending. Only as many as it counted are excused;
//     the rest are lost.
//
// The trimmed total is printed as faults.
func TestFaultTrimBacklog(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 2000 * scale
	const maxLen = 100
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:trim"
	led := newFaultLedger()
	rdb := faultClient(t, srv.Addr(), nil)

	// Fails op i on its first delivery when i%5 == 0 (retried by the
	// retry timer after 400 ms), and on its first three when i%11 == 0 (the
	// third wait, 1.6 s, outlasts ClaimMinIdle: XAUTOCLAIM redelivers it).
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		call := led.called(c.Message.OperationID)
		i, _ := strconv.Atoi(c.Message.OperationID[strings.LastIndexByte(c.Message.OperationID, '-')+1:])
		switch {
		case i%11 == 0 && call <= 3, i%5 == 0 && call == 1:
			return fmt.Errorf("transient failure of call %d", call)
		}
		faultHold(randBetween(time.Millisecond, 2*time.Millisecond))
		led.handled(c.Message.OperationID, c.EntryID)
		return nil
	})
	cfg := faultConfig(stream, "slow", faultLogger(t, "slow"))
	cfg.Concurrency, cfg.BatchSize = 2, 20
	cfg.RetryBackoff, cfg.MaxRetryBackoff = 400*time.Millisecond, 2*time.Second
	cfg.ClaimMinIdle, cfg.ClaimInterval = time.Second, 100*time.Millisecond
	c := newTestConsumer(t, rdb, anyTaskRegistry, h, cfg)
	stop := startConsumer(t, c)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(maxLen)}, prefix: "trim"}
	pubDone := pub.run(ctx, n, 3000)
	defer func() { cancel(); <-pubDone }()
	<-pubDone

	// The stream is append-only and MAXLEN trims from its head, so an
	// entry is gone exactly when its id is below the first entry's.
	firstID := func() string {
		msgs, err := rdb.XRangeN(ctx, stream, "-", "+", 1).Result()
		if err != nil || len(msgs) == 0 {
			return ""
		}
		return msgs[0].ID
	}
	first := ""
	ok := waitProgress(faultWait(n), func() bool {
		first = firstID()
		if first == "" {
			return false
		}
		for _, r := range led.records() {
			if compareIDs(r.entryID, first) >= 0 && led.handledCount(r.key) == 0 {
				return false
			}
		}
		return pendingOf(rdb, stream, "g") == 0
	})
	if !ok {
		t.Errorf("not settled: entries still in the stream unhandled, or entries pending (%d)", pendingOf(rdb, stream, "g"))
	}
	require.NoError(t, stop(), "Run's error")
	st := c.Stats()

	// What MAXLEN took, from the ledger and the stream.
	var neverDelivered, deletedPending int
	for _, r := range led.records() {
		if compareIDs(r.entryID, first) < 0 && led.handledCount(r.key) == 0 {
			if led.callCount(r.key) == 0 {
				neverDelivered++
			} else {
				deletedPending++
			}
		}
	}
	t.Logf("first entry at the end %s; trimmed unhandled: %d never delivered, %d deleted while pending; Stats: deleted_while_pending=%d delivered=%d succeeded=%d failed=%d retried=%d reclaimed=%d",
		first, neverDelivered, deletedPending, st.DeletedWhilePending, st.Delivered, st.Handled, st.Failed, st.Retried, st.Reclaimed)

	budget := st.DeletedWhilePending
	res := finishScenario(t, rdb, c, "trim-backlog", led, neverDelivered+deletedPending, func(r *ledgerRec, handled bool, calls int) string {
		if handled || compareIDs(r.entryID, first) >= 0 {
			return ""
		}
		if calls == 0 {
			return "trimmed before delivery"
		}
		if budget > 0 {
			budget--
			return "trimmed while pending (Stats.DeletedWhilePending)"
		}
		return "" // trimmed while pending, but the consumer did not count it
	})
	// Every entry trimmed while pending is counted. A few more may be: one
	// whose XACK lands just after an XAUTOCLAIM saw it deleted was handled,
	// yet counted (Redis reports it, and this consumer no longer holds it).
	assert.GreaterOrEqual(t, st.DeletedWhilePending, int64(deletedPending),
		"Stats().DeletedWhilePending must count every entry trimmed while pending")
	assert.LessOrEqual(t, st.DeletedWhilePending, int64(deletedPending+max(2, deletedPending/20)),
		"Stats().DeletedWhilePending counts far more than were trimmed while pending")
	assert.Positive(t, neverDelivered+deletedPending, "MAXLEN trimmed nothing: the scenario did not create a backlog")
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// ---------------------------------------------------------------------------
// 7. poison-mix

// poisonKind is one kind of entry of the poison-mix scenario, with its
// intended outcome.
type poisonKind struct {
	name      string
	raw       map[string]any // XADD these fields instead of publishing (poison)
	want      string         // outcomeHandled or the dl_reason
	calls     int            // handler calls intended (MaxDeliveries: -1)
	dlCount   int            // dl_deliveries intended (MaxDeliveries: -1)
	isFault   bool
	taskKnown bool
}

const poisonMaxDeliveries = 4

func poisonKinds(i int) []poisonKind {
	op := func(kind string) string { return fmt.Sprintf("pm-%d-%s", i, kind) }
	big := strings.Repeat("x", 5000)
	return []poisonKind{
		{name: "ok", want: outcomeHandled, calls: 1, taskKnown: true},
		{name: "permanent", want: ReasonPermanent, calls: 1, dlCount: 1, isFault: true, taskKnown: true},
		{name: "transient1", want: outcomeHandled, calls: 2, isFault: true, taskKnown: true},
		{name: "transient2", want: outcomeHandled, calls: 3, isFault: true, taskKnown: true},
		{name: "panic1", want: outcomeHandled, calls: 2, isFault: true, taskKnown: true},
		{name: "panicalways", want: ReasonMaxDeliveries, calls: -1, dlCount: -1, isFault: true, taskKnown: true},
		{name: "failalways", want: ReasonMaxDeliveries, calls: -1, dlCount: -1, isFault: true, taskKnown: true},
		{name: "unknown", want: ReasonTaskNotFound, dlCount: 1, isFault: true},
		{name: "invalid", want: ReasonInvalidTask, dlCount: 1, isFault: true},
		{name: "oversize", want: ReasonOversize, dlCount: 1, isFault: true, taskKnown: true},
		// The Python side's later revision: session_id for task_id, success
		// as 1. Not poison: it must be handled.
		{name: "lenient", raw: map[string]any{DataField: `{"operation_id":"` + op("lenient") + `","session_id":"t-` + strconv.Itoa(i) + `","success":1,"result":{"b":1,"a":2}}`},
			want: outcomeHandled, calls: 1, taskKnown: true},
		{name: "nodata", raw: map[string]any{"payload": `{"operation_id":"` + op("nodata") + `"}`}, want: ReasonMalformed, dlCount: 1, isFault: true},
		{name: "notjson", raw: map[string]any{DataField: `{"operation_id":"` + op("notjson") + `",`}, want: ReasonMalformed, dlCount: 1, isFault: true},
		{name: "wrongtype", raw: map[string]any{DataField: `{"operation_id":"` + op("wrongtype") + `","task_id":"t-1","success":"maybe"}`}, want: ReasonMalformed, dlCount: 1, isFault: true},
		{name: "resultnumber", raw: map[string]any{DataField: `{"operation_id":"` + op("resultnumber") + `","task_id":"t-1","success":true,"result":42}`}, want: ReasonMalformed, dlCount: 1, isFault: true},
		{name: "emptyid", raw: map[string]any{DataField: `{"operation_id":"","task_id":"t-1","success":true}`}, want: ReasonMalformed, dlCount: 1, isFault: true},
		{name: "rawoversize", raw: map[string]any{DataField: `{"operation_id":"` + op("rawoversize") + `","task_id":"t-1","success":true,"result":"` + big + `"}`}, want: ReasonOversize, dlCount: 1, isFault: true},
		{name: "dlfield", raw: map[string]any{DataField: "[]", "dl_reason": "forged"}, want: ReasonMalformed, dlCount: 1, isFault: true},
	}
}

// TestFaultPoisonMix: a mix of poison entries (raw XADDs of garbage: no data
// field, invalid JSON, wrong types, an empty id, oversize, a forged
// dl_reason field), completions of unknown and of invalid tasks, handlers
// that return a Permanent error, fail transiently then succeed, panic once
// then succeed, or always panic or fail, and healthy traffic, read by two
// consumers. Every id must reach exactly its intended outcome: handled with
// exactly the intended number of handler calls, or dead-lettered once with
// the intended dl_reason and delivery count. No fault here is a crash, so
// no duplicate is allowed.
func TestFaultPoisonMix(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	rounds := 25 * scale
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:poison"
	led := newFaultLedger()
	rdb := faultClient(t, srv.Addr(), nil)

	kindOf := func(op string) string { return op[strings.LastIndexByte(op, '-')+1:] }
	reg := TaskRegistryFunc(func(_ context.Context, op, task string) (Task, error) {
		switch kindOf(op) {
		case "unknown":
			return Task{}, fmt.Errorf("%w: operation %q, task %q", ErrTaskNotFound, op, task)
		case "invalid":
			return Task{TaskID: task, OperationID: op}, nil // no SessionID, no ToolCallID
		}
		return Task{TaskID: task, SessionID: "s-" + task, ToolCallID: "tc", OperationID: op}, nil
	})
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		op := c.Message.OperationID
		call := led.called(op)
		fail := func() error { return fmt.Errorf("transient failure of call %d", call) }
		switch kindOf(op) {
		case "permanent":
			return Permanent(errors.New("the result does not fit the task"))
		case "transient1":
			if call <= 1 {
				return fail()
			}
		case "transient2":
			if call <= 2 {
				return fail()
			}
		case "panic1":
			if call <= 1 {
				panic("handler bug on first call of " + op)
			}
		case "panicalways":
			panic("handler bug, always, " + op)
		case "failalways":
			return fail()
		}
		led.handled(op, c.EntryID)
		return nil
	})
	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.MaxDeliveries = poisonMaxDeliveries
		cfg.MaxPayloadBytes = 4096
		cfg.RetryBackoff, cfg.MaxRetryBackoff = 10*time.Millisecond, 50*time.Millisecond
		cfg.ClaimMinIdle = 6 * time.Second // retries come from the retry timer, never from a takeover
		c := newTestConsumer(t, faultClient(t, srv.Addr(), nil), reg, h, cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}

	ctx := context.Background()
	kinds := map[string]poisonKind{} // ledger key -> kind
	faults := 0
	for i := 0; i < rounds; i++ {
		for _, k := range poisonKinds(i) {
			var key, id string
			if k.raw != nil {
				var err error
				id, err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: k.raw}).Result()
				require.NoError(t, err)
				key = "raw:" + id
				if k.want == outcomeHandled {
					key = fmt.Sprintf("pm-%d-%s", i, k.name)
				}
			} else {
				m := Message{OperationID: fmt.Sprintf("pm-%d-%s", i, k.name), TaskID: fmt.Sprintf("t-%d", i), Success: i%2 == 0}
				if k.name == "oversize" {
					m.Result = StringResult(strings.Repeat("y", 5000))
				} else if !m.Success {
					m.Error = "operation failed"
				}
				var err error
				id, err = Publish(ctx, rdb, stream, m, WithMaxLen(0))
				require.NoError(t, err)
				key = m.OperationID
			}
			led.published(key, id, k.want, 0)
			kinds[key] = k
			if k.isFault {
				faults++
			}
		}
	}
	wantDL := 0
	for _, k := range kinds {
		if k.want != outcomeHandled {
			wantDL++
		}
	}
	ok := waitProgress(faultWait(len(kinds)), func() bool {
		n, err := rdb.XLen(ctx, consumers[0].Config().DeadLetterStream).Result()
		return err == nil && n >= int64(wantDL) && led.unhandled() == 0 && pendingOf(rdb, stream, "g") == 0
	})
	if !ok {
		t.Errorf("not settled: %d ids unhandled, %d entries pending", led.unhandled(), pendingOf(rdb, stream, "g"))
	}
	stopAll(t, stops...)
	for i, c := range consumers {
		st := c.Stats()
		t.Logf("c%d stats: delivered=%d succeeded=%d failed=%d retried=%d dead_lettered=%d reclaimed=%d leases_lost=%d", i+1,
			st.Delivered, st.Handled, st.Failed, st.Retried, st.DeadLettered, st.Reclaimed, st.LeasesLost)
	}
	res := finishScenario(t, rdb, consumers[0], "poison-mix", led, faults, nil)
	assert.Zero(t, res.duplicates, "duplicates without a crash")

	// Exactly as intended, per id: handler calls, and the dead letter's
	// reason and delivery count.
	dls, err := readDeadLetters(ctx, rdb, consumers[0].Config().DeadLetterStream)
	require.NoError(t, err)
	dlBySource := map[string][]deadLetterRec{}
	for _, d := range dls {
		dlBySource[d.sourceID] = append(dlBySource[d.sourceID], d)
	}
	bad := 0
	for _, r := range led.records() {
		k := kinds[r.key]
		wantCalls, wantCount := k.calls, k.dlCount
		if wantCalls < 0 {
			wantCalls = poisonMaxDeliveries
		}
		if wantCount < 0 {
			wantCount = poisonMaxDeliveries
		}
		calls := 0
		if !strings.HasPrefix(r.key, "raw:") {
			calls = led.callCount(r.key)
		}
		var problems []string
		if calls != wantCalls {
			problems = append(problems, fmt.Sprintf("%d handler calls, want %d", calls, wantCalls))
		}
		ds := dlBySource[r.entryID]
		switch {
		case k.want == outcomeHandled && len(ds) > 0:
			problems = append(problems, fmt.Sprintf("dead-lettered (%s), want handled", ds[0].reason))
		case k.want != outcomeHandled && len(ds) != 1:
			problems = append(problems, fmt.Sprintf("%d dead letters, want 1", len(ds)))
		case k.want != outcomeHandled:
			if ds[0].reason != k.want {
				problems = append(problems, fmt.Sprintf("dl_reason %q, want %q", ds[0].reason, k.want))
			}
			if ds[0].count != strconv.Itoa(wantCount) {
				problems = append(problems, fmt.Sprintf("dl_deliveries %s, want %d", ds[0].count, wantCount))
			}
		}
		if len(problems) > 0 {
			bad++
			if bad <= 20 {
				t.Errorf("%s (%s, entry %s): %s", r.key, k.name, r.entryID, strings.Join(problems, "; "))
			}
		}
	}
	assert.Zero(t, bad, "ids not handled exactly as intended")
}
