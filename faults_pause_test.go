package completion

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// ---------------------------------------------------------------------------
// pause-wake

// TestFaultPauseWake: a consumer process is frozen (SIGSTOP) for 6 s,
// three times ClaimMinIdle, while it holds entries (handlers running,
// entries queued behind them), then resumed (SIGCONT). Meanwhile the other
// consumer takes its entries over and handles them. After the wake-up the
// paused consumer must not run again what it had read but not started
// (each entry is checked before its handler starts), its handlers running
// on lost entries have their context cancelled, and it counts each lost
// entry once:
//
//   - duplicates <= the handlers that were mid-run when it froze (started,
//     not finished), plus the entries it had handled but not yet
//     acknowledged (still in its pending list at the freeze): every
//     duplicated entry must be one of those;
//   - Stats().LeasesLost of the paused consumer = the entries it actually
//     lost: those of its pending list at the freeze that the other
//     consumer reclaimed.
//
// The soak variant freezes it several times.
func TestFaultPauseWake(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	pauses := faultCount(1, scale)
	const claimMinIdle = 2 * time.Second
	const pause = 6 * time.Second
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:pausewake"
	led := newFaultLedger()
	check := faultClient(t, srv.Addr(), nil)
	ctx := context.Background()

	// The survivor, in-process: records what it reclaims.
	var recMu sync.Mutex
	reclaimedAt := map[string]time.Time{} // entry id -> first reclaim
	handledAt := map[string]time.Time{}   // entry id -> the survivor's first success
	cfg := faultConfig(stream, "survivor", faultLogger(t, "survivor"))
	cfg.ClaimMinIdle, cfg.ClaimInterval, cfg.Concurrency = claimMinIdle, 200*time.Millisecond, 8
	cfg.Observer = ObserverFunc(func(e Event) {
		var m map[string]time.Time
		switch e.Kind {
		case EventReclaimed:
			m = reclaimedAt
		case EventHandled:
			m = handledAt
		default:
			return
		}
		recMu.Lock()
		if _, ok := m[e.EntryID]; !ok {
			m[e.EntryID] = time.Now()
		}
		recMu.Unlock()
	})
	survivor := newTestConsumer(t, faultClient(t, srv.Addr(), nil), anyTaskRegistry, recordingHandler(led, "survivor", 250*time.Millisecond, 300*time.Millisecond), cfg)

	sleeper := startSpecChild(t, childSpec{
		Addr: srv.Addr(), Stream: stream, Consumer: "sleeper",
		SleepMin: 250 * time.Millisecond, SleepMax: 300 * time.Millisecond,
		Concurrency: 8, BatchSize: 50, ClaimMinIdle: claimMinIdle,
	})
	syncLedger := func() {
		if err := sleeper.ledger.sync(led); err != nil {
			t.Logf("read the sleeper's ledger: %v", err)
		}
	}
	stopSurvivor := startConsumer(t, survivor)

	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "wake"}
	next := 0
	allowed := map[string]string{} // "op entry" -> why a duplicate of it is allowed
	pendingAtFreeze := map[string]time.Time{}
	midRun, doneUnacked := 0, 0
	var wokeAt []time.Time
	for k := 0; k < pauses; k++ {
		// A burst, so that the sleeper holds entries running and queued.
		for range 160 {
			require.True(t, pub.publish(ctx, next, 0))
			next++
		}
		var pend []redis.XPendingExt
		busy := waitProgress(60*time.Second, func() bool {
			syncLedger()
			started, done := sleeper.ledger.snapshot()
			running := 0
			for key := range started {
				if done[key] == 0 {
					running++
				}
			}
			var err error
			pend, err = check.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 10000, Consumer: "sleeper"}).Result()
			return err == nil && running >= 4 && len(pend) >= 20
		})
		require.True(t, busy, "pause %d: the sleeper is not busy", k+1)

		sleeper.signal(syscall.SIGSTOP)
		frozeAt := time.Now()
		// The process is stopped: its ledger file no longer changes (a
		// write under way completes), and its pending list only shrinks
		// by an XACK already on the wire.
		faultHold(50 * time.Millisecond)
		syncLedger()
		pend, err := check.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: "g", Start: "-", End: "+", Count: 10000, Consumer: "sleeper"}).Result()
		require.NoError(t, err)
		started, done := sleeper.ledger.snapshot()
		mid, unacked := 0, 0
		inPEL := map[string]bool{}
		for _, p := range pend {
			inPEL[p.ID] = true
			pendingAtFreeze[p.ID] = frozeAt
		}
		for key := range started {
			_, entry, _ := strings.Cut(key, " ")
			switch {
			case done[key] == 0:
				allowed[key] = "mid-run at the freeze"
				mid++
			case inPEL[entry]:
				allowed[key] = "handled, not yet acknowledged at the freeze"
				unacked++
			}
		}
		midRun += mid
		doneUnacked += unacked
		t.Logf("pause %d: sleeper frozen holding %d pending entries: %d handlers mid-run, %d handled and not yet acknowledged, the rest queued",
			k+1, len(pend), mid, unacked)

		faultHold(pause) // the fault's own duration
		sleeper.signal(syscall.SIGCONT)
		wokeAt = append(wokeAt, time.Now())
		recMu.Lock()
		taken := 0
		for id := range inPEL {
			if _, ok := reclaimedAt[id]; ok {
				taken++
			}
		}
		recMu.Unlock()
		t.Logf("pause %d: sleeper resumed after %v; the survivor had reclaimed %d of its entries by then", k+1, pause, taken)

		// Let the round settle before the next freeze.
		settle(t, check, stream, led, faultWait(next), syncLedger)
	}

	// Steady traffic after the last wake-up: the sleeper works on.
	for range 100 {
		require.True(t, pub.publish(ctx, next, 0))
		next++
	}
	settle(t, check, stream, led, faultWait(next), syncLedger)
	require.NoError(t, sleeper.stop(bound(cfg)+runStopMargin+30*time.Second), "the sleeper's exit")
	stopAll(t, stopSurvivor)
	syncLedger()
	checkChildOutput(t, sleeper)
	run := sleeper.runResult()
	require.True(t, run.returned, "the sleeper did not report its Stats")

	// The entries the sleeper actually lost: those of its pending list at
	// a freeze that the survivor reclaimed after it.
	recMu.Lock()
	actuallyLost := map[string]bool{}
	for id, at := range pendingAtFreeze {
		if r, ok := reclaimedAt[id]; ok && r.After(at) {
			actuallyLost[id] = true
		}
	}
	recMu.Unlock()
	reported := sleeper.ledger.lostIDs()
	var twice, unseen, wrong []string
	for id, n := range reported {
		if n > 1 {
			twice = append(twice, fmt.Sprintf("%s×%d", id, n))
		}
		if !actuallyLost[id] {
			wrong = append(wrong, id)
		}
	}
	for id := range actuallyLost {
		if reported[id] == 0 {
			unseen = append(unseen, id)
		}
	}
	sort.Strings(unseen)
	t.Logf("sleeper stats: delivered=%d succeeded=%d reclaimed=%d leases_lost=%d; actually lost %d; EventLeaseLost for %d entries (%d twice, %d not lost, %d lost but not reported: %v)",
		run.stats.Delivered, run.stats.Handled, run.stats.Reclaimed, run.stats.LeasesLost, len(actuallyLost), len(reported), len(twice), len(wrong), len(unseen), firstN(unseen, 10))
	st := survivor.Stats()
	t.Logf("survivor stats: delivered=%d succeeded=%d reclaimed=%d leases_lost=%d", st.Delivered, st.Handled, st.Reclaimed, st.LeasesLost)

	res := finishScenario(t, check, survivor, "pause-wake", led, pauses, nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
	assert.LessOrEqual(t, res.duplicates, midRun+doneUnacked,
		"duplicates: %d, but only %d handlers were mid-run at the freezes and %d entries handled but not yet acknowledged", res.duplicates, midRun, doneUnacked)
	finishedFirst := 0 // duplicates the survivor had handled before a wake-up
	for _, key := range led.duplicatedEntries() {
		_, entry, _ := strings.Cut(key, " ")
		recMu.Lock()
		at, ok := handledAt[entry]
		recMu.Unlock()
		for _, w := range wokeAt {
			if ok && at.Before(w) && w.Sub(at) < pause {
				finishedFirst++
				break
			}
		}
		if allowed[key] == "" {
			t.Errorf("duplicate of %s, which was neither mid-run nor awaiting its acknowledgement at a freeze (it had been read, not started)", key)
		}
	}
	t.Logf("of %d duplicates, %d are entries the survivor had already handled when the sleeper woke up", res.duplicates, finishedFirst)
	assert.Equal(t, int64(len(actuallyLost)), run.stats.LeasesLost, "the sleeper's Stats().LeasesLost against the entries it actually lost")
	assert.Empty(t, twice, "entries reported lost more than once")
	assert.Empty(t, wrong, "entries reported lost that the survivor never reclaimed")
}

// bound is Run's documented shutdown bound for cfg.
func bound(cfg Config) time.Duration { return cfg.ShutdownTimeout + runStopBound }

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// duplicatedEntries returns "op entry" for every entry handled
// successfully more than once.
func (l *faultLedger) duplicatedEntries() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for pair, n := range l.success {
		if n > 1 {
			key, entry, _ := strings.Cut(pair, "|")
			out = append(out, key+" "+entry)
		}
	}
	sort.Strings(out)
	return out
}
