package completion

// The sentinel-failover scenario, on internal/redistest's Sentinel harness
// with the replica's replication link through a proxy, so that the test can
// make the replica lag behind the master before killing it.

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// TestFaultSentinelFailover: consumers and the publisher reach Redis through
// Sentinel (redis.NewFailoverClient); the master is SIGKILLed mid-stream and
// the sentinels promote the replica. Replication is asynchronous, so
// entries the old master acknowledged (Publish returned their id) may never
// have reached the replica: those, when not handled before the failover,
// are excused, found by comparing the ledger with the new master's stream.
// Every other id must be handled; duplicates (acknowledgements the replica
// never saw) are reported. The replication link stalls for 300 ms just
// before the kill, so that such unreplicated writes happen in every run.
func TestFaultSentinelFailover(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 1000 * scale
	s := redistest.StartSentinelWith(t, redistest.SentinelOptions{ProxyReplication: true})
	stream := "faults:sentinel"
	led := newFaultLedger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var stops []func() error
	var consumers []*Consumer
	for _, name := range []string{"c1", "c2"} {
		c := newTestConsumer(t, sentinelClient(t, s), anyTaskRegistry, recordingHandler(led, name, 0, 3*time.Millisecond), faultConfig(stream, name, faultLogger(t, name)))
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}
	pub := &faultPublisher{rdb: sentinelClient(t, s), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "sentinel"}
	pubDone := pub.run(ctx, n, float64(n)/6)
	defer func() { cancel(); <-pubDone }()

	require.True(t, waitProgress(faultWait(n), func() bool { return pub.done.Load() >= int64(n*2/5) }), "publishing stalled")
	promoted := killSentinelMaster(t, s)
	t.Logf("master SIGKILLed after %d publishes; %s promoted %v later", n*2/5, s.Servers()[1].Addr(), promoted.Round(time.Millisecond))
	<-pubDone

	newMaster := faultClient(t, s.Servers()[1].Addr(), nil)
	onNew, unreplicated := replicatedEntries(ctx, t, newMaster, stream, led)
	// Only entries published around the kill may be missing.
	settle2 := waitProgress(faultWait(n), func() bool {
		for _, r := range led.records() {
			if onNew[r.entryID] == r.key && led.handledCount(r.key) == 0 {
				return false
			}
		}
		return pendingOf(newMaster, stream, "g") == 0
	})
	if !settle2 {
		t.Errorf("not settled: entries on the new master unhandled, or pending (%d)", pendingOf(newMaster, stream, "g"))
	}
	stopAll(t, stops...)
	logConsumerStats(t, consumers)
	t.Logf("published %d ids; %d acknowledged by the old master are missing on the new one; publish attempts failed: %d",
		led.count(), unreplicated, pub.failures.Load())
	res := finishScenario(t, newMaster, consumers[0], "sentinel-failover", led, 1, func(r *ledgerRec, handled bool, _ int) string {
		if !handled && onNew[r.entryID] != r.key {
			return "acknowledged by the old master, never replicated"
		}
		return ""
	})
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
	assert.LessOrEqual(t, res.excused, unreplicated)
	assert.Positive(t, unreplicated, "no write went missing: the stalled replication link did not hold any (did the sentinels re-point the replica past the proxy?), so the scenario tested no lossy failover")
}

// sentinelClient returns a failover client of s, closed in t.Cleanup.
func sentinelClient(t testing.TB, s *redistest.Sentinel) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: redistest.SentinelMaster, SentinelAddrs: s.Addrs(), DialTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// killSentinelMaster stalls the replication link for a moment and then
// SIGKILLs the master, so that the master acknowledges writes it never
// replicates, as with a lagging replica; refusing and cutting the link
// drops what it holds. It waits until the sentinels have promoted the
// replica, and returns how long that took after the kill.
func killSentinelMaster(t *testing.T, s *redistest.Sentinel) time.Duration {
	t.Helper()
	link := s.ReplicationLink()
	link.SetStall(true)
	faultHold(300 * time.Millisecond)
	killedAt := time.Now()
	s.Servers()[0].Kill()
	link.SetRefuse(true)
	link.CutAll()
	link.SetStall(false)
	s.WaitMaster(t, s.Servers()[1].Addr(), 60*time.Second)
	return time.Since(killedAt)
}

// replicatedEntries reads what the new master's stream has (entry id ->
// operation id) and counts the ledger's ids it is missing: those the old
// master acknowledged and never replicated.
func replicatedEntries(ctx context.Context, t *testing.T, newMaster *redis.Client, stream string, led *faultLedger) (map[string]string, int) {
	t.Helper()
	onNew := map[string]string{}
	msgs, err := newMaster.XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	for _, m := range msgs {
		var msg Message
		if d, ok := m.Values[DataField].(string); ok && decodeMessage([]byte(d), &msg) == nil {
			onNew[m.ID] = msg.OperationID
		}
	}
	unreplicated := 0
	for _, r := range led.records() {
		if onNew[r.entryID] != r.key {
			unreplicated++
		}
	}
	return onNew, unreplicated
}
