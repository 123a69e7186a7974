package completion

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// ---------------------------------------------------------------------------
// oom-noeviction

// TestFaultOOMNoEviction: Redis runs with maxmemory and the noeviction
// policy, and a filler keeps it full, so that every write that needs memory
// (SET, XADD) fails with OOM while reads and XACK still work. Two consumers
// with DedupTTL handle a backlog of completions and poison entries
// meanwhile. Throughout, nothing may be acknowledged without its
// duplicate-suppression record (a handled completion) or its dead letter (a
// poison entry): a write that fails keeps the entry pending. Once memory is
// freed, every entry ends handled or dead-lettered.
//
// The invariant is checked on snapshots read in this order: the group's
// last-delivered id, then the pending list, then the records and dead
// letters. An entry delivered before the first read and not pending at the
// second was acknowledged before it, so its record (written before the
// XACK) or its dead letter must exist at the third.
func TestFaultOOMNoEviction(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 500 * scale
	oomFor := time.Duration(3*faultCount(1, scale)) * time.Second
	srv := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", "noeviction"}})
	stream := "faults:oom"
	led := newFaultLedger()
	rdb := faultClient(t, srv.Addr(), nil)
	ctx := context.Background()

	// The backlog, published while there is memory: completions, and a
	// poison entry every tenth.
	pub := &faultPublisher{rdb: rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "oom"}
	poison := 0
	for i := 0; i < n; i++ {
		if i%10 == 9 {
			id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{DataField, "not json " + strconv.Itoa(i)}}).Result()
			require.NoError(t, err)
			led.published("raw:"+id, id, ReasonMalformed, 0)
			poison++
			continue
		}
		require.True(t, pub.publish(ctx, i, 0))
	}
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())

	// The consumers start while there is memory (a consumer cannot start
	// while Redis is full: TestFaultOOMConsumerStart), and their handlers
	// wait until memory is full.
	gate := make(chan struct{})
	gated := func(h HandlerFunc) HandlerFunc {
		return func(ctx context.Context, c *Completion) error {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
			return h(ctx, c)
		}
	}
	var consumers []*Consumer
	var stops []func() error
	for _, name := range []string{"c1", "c2"} {
		cfg := faultConfig(stream, name, faultLogger(t, name))
		cfg.DedupTTL = time.Hour
		c := newTestConsumer(t, faultClient(t, srv.Addr(), nil), anyTaskRegistry, gated(recordingHandler(led, name, 0, 2*time.Millisecond)), cfg)
		consumers = append(consumers, c)
		stops = append(stops, startConsumer(t, c))
	}
	dlStream := consumers[0].Config().DeadLetterStream
	prefix := consumers[0].Config().DedupPrefix

	require.True(t, waitProgress(30*time.Second, func() bool {
		for _, c := range consumers {
			if c.State() != StateRunning || c.Stats().InFlight == 0 {
				return false
			}
		}
		return true
	}), "the consumers did not start")

	fill := fillMemory(t, rdb)
	close(gate)

	// While memory is full: check the invariant again and again.
	checks, violations := 0, 0
	var acked int
	deadline := time.Now().Add(oomFor)
	for time.Now().Before(deadline) {
		a, bad := checkNothingAckedBare(t, rdb, stream, dlStream, prefix, led)
		checks++
		acked = a
		violations += len(bad)
		for _, b := range firstN(bad, 10) {
			t.Errorf("acknowledged during OOM without its record or dead letter: %s", b)
		}
		faultHold(200 * time.Millisecond)
	}
	handledDuringOOM := len(led.records()) - led.unhandled() - poison
	pendingDuringOOM := pendingOf(rdb, stream, "g")
	t.Logf("memory full for %v (%d OOM refusals to the filler, %d KiB of ballast): %d checks, %d entries acknowledged, %d ids handled, %d entries pending at the end",
		oomFor, fill.ooms.Load(), fill.ballast.Load(), checks, acked, handledDuringOOM, pendingDuringOOM)
	assert.Positive(t, pendingDuringOOM, "nothing was held back by the full memory: the scenario did not bite")

	// Free the memory: everything must end handled or dead-lettered.
	fill.free()
	ok := waitProgress(faultWait(n), func() bool {
		dl, err := rdb.XLen(ctx, dlStream).Result()
		return err == nil && dl >= int64(poison) && led.unhandled() == 0 && pendingOf(rdb, stream, "g") == 0
	})
	if !ok {
		t.Errorf("not settled after memory was freed: %d ids unhandled, %d pending", led.unhandled(), pendingOf(rdb, stream, "g"))
	}
	_, bad := checkNothingAckedBare(t, rdb, stream, dlStream, prefix, led)
	for _, b := range firstN(bad, 10) {
		t.Errorf("acknowledged without its record or dead letter: %s", b)
	}
	stopAll(t, stops...)
	var redisErrors int64
	for i, c := range consumers {
		st := c.Stats()
		redisErrors += st.RedisErrors
		t.Logf("c%d stats: delivered=%d succeeded=%d dead_lettered=%d duplicates=%d redis_errors=%d last_error=%q", i+1,
			st.Delivered, st.Handled, st.DeadLettered, st.Duplicates, st.RedisErrors, st.LastError)
	}
	assert.Positive(t, redisErrors, "the consumers never met an OOM refusal")
	assert.Zero(t, violations, "entries acknowledged during OOM without their record or dead letter")
	res := finishScenario(t, rdb, consumers[0], "oom-noeviction", led, 1, nil)
	assert.Equal(t, poison, res.deadLettered, "dead letters")
}

// memoryFiller keeps a Redis full: maxmemory just above what it uses, and a
// goroutine that SETs 1 KiB ballast keys whenever memory is freed.
type memoryFiller struct {
	t       testing.TB
	rdb     *redis.Client
	ballast atomic.Int64 // keys written
	ooms    atomic.Int64 // SETs refused with OOM
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	freed   bool
}

// fillMemory fills the Redis of rdb (which must run with noeviction) and
// returns once a write was refused with OOM. It frees the memory in
// t.Cleanup unless free was called.
func fillMemory(t testing.TB, rdb *redis.Client) *memoryFiller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &memoryFiller{t: t, rdb: rdb, cancel: cancel}
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(usedMemory(t, rdb)+512<<10, 10)).Err())
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		value := strings.Repeat("b", 1024)
		for ctx.Err() == nil {
			err := rdb.Set(ctx, "ballast:"+strconv.FormatInt(f.ballast.Load(), 10), value, 0).Err()
			switch {
			case err == nil:
				f.ballast.Add(1)
			case strings.HasPrefix(err.Error(), "OOM"):
				f.ooms.Add(1)
				faultHold(2 * time.Millisecond)
			default:
				faultHold(10 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(f.free)
	require.True(t, waitProgress(30*time.Second, func() bool { return f.ooms.Load() > 0 }), "Redis never ran out of memory")
	return f
}

// free stops the filler, lifts maxmemory and deletes the ballast.
func (f *memoryFiller) free() {
	if f.freed {
		return
	}
	f.freed = true
	f.cancel()
	f.wg.Wait()
	ctx := context.Background()
	if err := f.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		f.t.Errorf("CONFIG SET maxmemory 0: %v", err)
	}
	for i := int64(0); i < f.ballast.Load(); i += 1000 {
		var keys []string
		for j := i; j < min(i+1000, f.ballast.Load()); j++ {
			keys = append(keys, "ballast:"+strconv.FormatInt(j, 10))
		}
		if err := f.rdb.Del(ctx, keys...).Err(); err != nil {
			f.t.Errorf("delete the ballast: %v", err)
			return
		}
	}
}

// TestFaultOOMConsumerStart: a consumer that starts (a pod restarting)
// while Redis is out of memory, on a stream whose group exists. Nothing it
// needs is refused: XREADGROUP and XACK work under OOM (neither is a
// "denyoom" command) and it has no records to write (no DedupTTL). So it
// must start and handle the backlog instead of failing with
// ErrStartTimeout. (XGROUP CREATE is denyoom: Redis refuses it with OOM
// before it would answer BUSYGROUP.)
func TestFaultOOMConsumerStart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", "noeviction"}})
	stream := "faults:oomstart"
	led := newFaultLedger()
	rdb := faultClient(t, srv.Addr(), nil)
	ctx := context.Background()
	pub := &faultPublisher{rdb: rdb, stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "oomstart"}
	for i := range 100 {
		require.True(t, pub.publish(ctx, i, 0))
	}
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
	fill := fillMemory(t, rdb)

	cfg := faultConfig(stream, "late", faultLogger(t, "late"))
	cfg.StartTimeout = 3 * time.Second
	c := newTestConsumer(t, faultClient(t, srv.Addr(), nil), anyTaskRegistry, recordingHandler(led, "late", 0, time.Millisecond), cfg)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	settled := waitProgress(30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		return led.unhandled() == 0 && pendingOf(rdb, stream, "g") == 0
	})
	cancel()
	err := <-done
	t.Logf("memory full (%d OOM refusals to the filler): %d of %d ids handled; Run: %v; stats: %+v", fill.ooms.Load(), led.count()-led.unhandled(), led.count(), err, c.Stats())
	assert.True(t, settled, "the backlog was not handled")
	assert.NoError(t, err, "Run started while Redis was out of memory, with its group in place")
	fill.free()
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(t testing.TB, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	require.NoError(t, err)
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// checkNothingAckedBare checks that every entry of the ledger that the
// group has acknowledged has its duplicate-suppression record (a
// completion) or its dead letter (poison). It returns how many entries
// were acknowledged and a line for each that has neither.
func checkNothingAckedBare(t testing.TB, rdb *redis.Client, stream, dlStream, prefix string, led *faultLedger) (int, []string) {
	t.Helper()
	ctx := context.Background()
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) == 0 {
		t.Logf("XINFO GROUPS: %v", err)
		return 0, nil
	}
	last := groups[0].LastDeliveredID
	pel, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 1 << 20}).Result()
	if err != nil {
		t.Logf("XPENDING: %v", err)
		return 0, nil
	}
	pending := make(map[string]bool, len(pel))
	for _, p := range pel {
		pending[p.ID] = true
	}
	var acked []*ledgerRec
	for _, r := range led.records() {
		if compareIDs(r.entryID, last) <= 0 && !pending[r.entryID] {
			acked = append(acked, r)
		}
	}
	dls, err := readDeadLetters(ctx, rdb, dlStream)
	if err != nil {
		t.Logf("read dead letters: %v", err)
		return 0, nil
	}
	dead := map[string]bool{}
	for _, d := range dls {
		dead[d.sourceID] = true
	}
	var bad []string
	var cmds []*redis.IntCmd
	var recs []*ledgerRec
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, r := range acked {
			if r.want == outcomeHandled {
				cmds = append(cmds, p.Exists(ctx, prefix+r.key))
				recs = append(recs, r)
			} else if !dead[r.entryID] {
				bad = append(bad, fmt.Sprintf("%s (entry %s): no dead letter", r.key, r.entryID))
			}
		}
		return nil
	})
	if err != nil {
		t.Logf("EXISTS: %v", err)
		return len(acked), bad
	}
	for i, c := range cmds {
		if c.Val() != 1 {
			bad = append(bad, fmt.Sprintf("%s (entry %s): no duplicate-suppression record", recs[i].key, recs[i].entryID))
		}
	}
	return len(acked), bad
}
