package completion

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// Run's documented shutdown bound (Consumer.Run): ShutdownTimeout for the
// handlers, 2 s for them to react to their cancelled context, 5 s for the
// last acknowledgements.
const runStopBound = 7 * time.Second

// runStopMargin is the slack the suite allows on top of Run's bound: the
// child's signal delivery and scheduling on 2 loaded cores under -race.
const runStopMargin = 3 * time.Second

// ---------------------------------------------------------------------------
// shutdown-frozen-redis

// TestFaultShutdownFrozenRedis: Redis is frozen (SIGSTOP) while two
// consumer processes are busy, and half a second later both are asked to
// stop (SIGTERM). Run must return within its documented bound,
// ShutdownTimeout + 7 s, whatever Redis does: every Redis call of the stop
// is bounded. What could not be acknowledged stays pending; once Redis is
// resumed a fresh consumer handles it (duplicates are reported, nothing may
// be lost). BatchSize is 20, so that acknowledgements fill the acker's
// buffer while Redis is frozen and handlers that finished wait to hand
// theirs over when the stop begins. The soak variant repeats this with
// other delays between the freeze and the SIGTERM, and resumes Redis in the
// middle of some stops.
func TestFaultShutdownFrozenRedis(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	rounds := faultCount(1, scale)
	const shutdownTimeout = 3 * time.Second
	bound := shutdownTimeout + runStopBound
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:frozen"
	led := newFaultLedger()
	ledgers := &childLedgers{}
	check := faultClient(t, srv.Addr(), nil)
	ctx := context.Background()
	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "frozen"}

	next := 0
	var slowest time.Duration
	for round := 0; round < rounds; round++ {
		// A backlog, so that both consumers hold entries: queued, running,
		// and waiting for their XACK.
		for range 300 {
			require.True(t, pub.publish(ctx, next, 0))
			next++
		}
		var kids []*childProc
		for k := range 2 {
			c := startSpecChild(t, childSpec{
				Addr: srv.Addr(), Stream: stream, Consumer: fmt.Sprintf("frozen-%d-%d", round, k),
				SleepMin: 20 * time.Millisecond, SleepMax: 300 * time.Millisecond, FailFirst: true,
				Concurrency: 8, BatchSize: 20, ShutdownTimeout: shutdownTimeout,
				DialTimeout: 5 * time.Second, // go-redis's defaults otherwise (ReadTimeout 3 s, 3 retries)
			})
			ledgers.add(c)
			kids = append(kids, c)
		}
		busy := waitProgress(60*time.Second, func() bool {
			ledgers.sync(t, led)
			for _, c := range kids {
				if started, _ := c.ledger.snapshot(); len(started) < 20 {
					return false
				}
			}
			return true
		})
		require.True(t, busy, "the consumers did not start handling")

		delay := 500 * time.Millisecond
		resumeAfter := time.Duration(0) // 0: Redis stays frozen until both have returned
		if round > 0 {
			delay = randBetween(0, 1500*time.Millisecond)
			if round%2 == 0 {
				resumeAfter = randBetween(time.Second, bound)
			}
		}
		srv.Pause()
		faultHold(delay) // the fault's own duration
		for _, c := range kids {
			c.signal(syscall.SIGTERM)
		}
		sent := time.Now()
		if resumeAfter > 0 {
			time.AfterFunc(resumeAfter, srv.Resume)
		}
		for _, c := range kids {
			if !c.wait(bound + runStopMargin + 30*time.Second) {
				t.Errorf("round %d: %s still alive %v after SIGTERM", round, c.name, time.Since(sent).Round(time.Millisecond))
				c.kill()
				continue
			}
			exited := time.Since(sent)
			r := c.runResult()
			if !r.returned {
				t.Errorf("round %d: %s exited (%s) without Run returning:\n%s", round, c.name, c.cmd.ProcessState, tailText(c.output(), 30))
				continue
			}
			slowest = max(slowest, r.after)
			t.Logf("round %d: %s: Run returned %v after SIGTERM (Redis frozen %v before; resumed after %v), err=%s; process exited after %v",
				round, c.name, r.after.Round(time.Millisecond), delay.Round(time.Millisecond), resumeAfter.Round(time.Millisecond), r.err, exited.Round(time.Millisecond))
			assert.LessOrEqual(t, r.after, bound+runStopMargin,
				"round %d: %s: Run returned %v after its context was cancelled; the documented bound is ShutdownTimeout + 7 s = %v (plus %v margin)",
				round, c.name, r.after, bound, runStopMargin)
			assert.Equal(t, "<nil>", r.err, "round %d: %s: Run's error", round, c.name)
			checkChildOutput(t, c)
		}
		srv.Resume()
	}

	// Whatever the stopped consumers left pending, a fresh one handles.
	ledgers.sync(t, led)
	pendingLeft := pendingOf(check, stream, "g")
	cfg := faultConfig(stream, "drain", faultLogger(t, "drain"))
	cfg.ClaimMinIdle, cfg.ClaimInterval = time.Second, 100*time.Millisecond
	drain := newTestConsumer(t, faultClient(t, srv.Addr(), nil), anyTaskRegistry, recordingHandler(led, "drain", 0, time.Millisecond), cfg)
	stop := startConsumer(t, drain)
	settle(t, check, stream, led, faultWait(next), func() { ledgers.sync(t, led) })
	stopAll(t, stop)
	ledgers.sync(t, led)
	t.Logf("slowest Run after SIGTERM: %v (bound %v); %d entries were left pending by the stops; the drain reclaimed %d",
		slowest.Round(time.Millisecond), bound, pendingLeft, drain.Stats().Reclaimed)
	res := finishScenario(t, check, drain, "shutdown-frozen-redis", led, rounds, nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}
