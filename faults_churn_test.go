package completion

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
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
// churn

// churnSlot is one of the churn scenario's six consumer processes, as it
// is restarted: the process now, its name, and when it was last seen in
// XINFO CONSUMERS.
type churnSlot struct {
	proc  *childProc
	name  string
	gen   int
	since time.Time // when proc started
	seen  bool      // listed by XINFO CONSUMERS since it started
}

// TestFaultChurn: six consumer processes are churned for a while (40 s in
// soak, 12 s by default): at random one is SIGKILLed, SIGTERMed or
// restarted, and comes back, under a new name or, after a SIGKILL, under
// its old one, while the producer publishes. StaleConsumerAge is 5 s, so
// the consumers remove departed ones quickly. Throughout and for a quiet
// period after the load stops (longer than StaleConsumerAge and the
// cleanup period):
//
//   - nothing is lost;
//   - no live consumer is removed from the group: every consumer process
//     that runs and has been listed by XINFO CONSUMERS stays listed;
//   - the consumer list stays bounded: at most the live consumers plus
//     those that stopped within the last 10 s (a departed consumer is
//     removed StaleConsumerAge after its last read, once its entries were
//     claimed, within one cleanup period), and at the end exactly the live
//     ones.
func TestFaultChurn(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	churnFor := 12 * time.Second
	if scale > 1 {
		churnFor = 40 * time.Second
	}
	const slots = 6
	const staleAge = 5 * time.Second
	const deadWindow = 10 * time.Second
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:churn"
	led := newFaultLedger()
	ledgers := &childLedgers{}
	check := faultClient(t, srv.Addr(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	spec := func(name string) childSpec {
		return childSpec{
			Addr: srv.Addr(), Stream: stream, Consumer: name,
			SleepMin: 2 * time.Millisecond, SleepMax: 30 * time.Millisecond, FailFirst: true,
			Concurrency: 4, BatchSize: 20, ClaimMinIdle: 2 * time.Second, StaleConsumerAge: staleAge,
			ShutdownTimeout: 2 * time.Second,
		}
	}
	var mu sync.Mutex
	var all []*childProc
	stoppedAt := map[string]time.Time{} // name -> when its last process stopped
	slot := make([]*churnSlot, slots)
	start := func(i int, name string) {
		p := startSpecChild(t, spec(name))
		ledgers.add(p)
		mu.Lock()
		all = append(all, p)
		delete(stoppedAt, name)
		slot[i].proc, slot[i].name, slot[i].since, slot[i].seen = p, name, time.Now(), false
		mu.Unlock()
	}
	for i := range slot {
		slot[i] = &churnSlot{}
		start(i, fmt.Sprintf("churn-%d-0", i))
	}

	pub := &faultPublisher{rdb: faultClient(t, srv.Addr(), nil), stream: stream, led: led, opts: []PublishOption{WithMaxLen(0)}, prefix: "churn"}
	n := int(churnFor.Seconds() * 150)
	pubDone := pub.run(ctx, n, 150)
	defer func() { cancel(); <-pubDone }()

	// The group's view, checked every 250 ms: every live consumer that was
	// listed is still listed; no more than the live and the recently
	// stopped are listed.
	var missing, overfull []string
	maxListed := 0
	checkGroup := func(final bool) {
		cs, err := check.XInfoConsumers(ctx, stream, "g").Result()
		if err != nil {
			return // the group does not exist yet
		}
		listed := map[string]bool{}
		for _, c := range cs {
			listed[c.Name] = true
		}
		mu.Lock()
		defer mu.Unlock()
		maxListed = max(maxListed, len(cs))
		live, recent := 0, 0
		for _, s := range slot {
			if s.proc == nil {
				continue
			}
			live++
			switch {
			case listed[s.name]:
				s.seen = true
			case s.seen:
				missing = append(missing, fmt.Sprintf("%s (pid %d, up %v) missing from XINFO CONSUMERS %v",
					s.name, s.proc.pid(), time.Since(s.since).Round(time.Millisecond), names(cs)))
			}
		}
		for name, at := range stoppedAt {
			if listed[name] && time.Since(at) <= deadWindow {
				recent++
			}
		}
		if len(cs) > live+recent {
			overfull = append(overfull, fmt.Sprintf("%d consumers listed, %d live and %d stopped within %v: %v", len(cs), live, recent, deadWindow, names(cs)))
		}
		if final && len(cs) != live {
			overfull = append(overfull, fmt.Sprintf("at the end: %d consumers listed, %d live: %v", len(cs), live, names(cs)))
		}
	}

	// The churn.
	actions := map[string]int{}
	deadline := time.Now().Add(churnFor)
	nextCheck := time.Now()
	for time.Now().Before(deadline) {
		if time.Now().After(nextCheck) {
			checkGroup(false)
			nextCheck = time.Now().Add(250 * time.Millisecond)
		}
		faultHold(randBetween(300*time.Millisecond, 900*time.Millisecond))
		i := rand.N(slots)
		s := slot[i]
		mu.Lock()
		p, name := s.proc, s.name
		s.proc = nil // not live from now on
		stoppedAt[name] = time.Now()
		s.gen++
		gen := s.gen
		mu.Unlock()
		switch rand.N(3) {
		case 0: // crash; back under the same name (a restarted pod)
			actions["sigkill"]++
			p.kill()
			checkChildOutput(t, p)
			start(i, name)
		case 1: // graceful stop; a new pod takes the slot
			actions["sigterm"]++
			p.signal(syscall.SIGTERM)
			go p.wait(bound(spec(name).config(nil)) + runStopMargin + 30*time.Second)
			start(i, fmt.Sprintf("churn-%d-%d", i, gen))
		default: // crash; a new pod takes the slot a moment later
			actions["sigkill+new"]++
			p.kill()
			checkChildOutput(t, p)
			faultHold(randBetween(0, 500*time.Millisecond))
			start(i, fmt.Sprintf("churn-%d-%d", i, gen))
		}
	}
	t.Logf("churned for %v: %v", churnFor, actions)
	<-pubDone
	ledgers.sync(t, led)

	// Quiet: load stopped, six consumers alive and idle. None may be
	// removed; the departed ones must go.
	quiet := staleAge + staleAge/4 + 4*time.Second
	quietEnd := time.Now().Add(quiet)
	for time.Now().Before(quietEnd) {
		checkGroup(false)
		faultHold(250 * time.Millisecond)
	}
	settle(t, check, stream, led, faultWait(n), func() { ledgers.sync(t, led) })
	checkGroup(true)
	sort.Strings(missing)
	for _, m := range firstN(missing, 10) {
		t.Errorf("a live consumer was removed from the group: %s", m)
	}
	for _, o := range firstN(overfull, 10) {
		t.Errorf("consumer list not bounded: %s", o)
	}
	t.Logf("at most %d consumers listed at once; %d processes in all", maxListed, len(all))

	// Stop the live ones gracefully; they must have run cleanly.
	errs := make([]error, slots)
	var wg sync.WaitGroup
	for i, s := range slot {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.proc.stop(bound(spec(s.name).config(nil)) + runStopMargin + 30*time.Second)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "stop %s", slot[i].name)
	}
	for _, p := range all {
		p.wait(30 * time.Second)
		checkChildOutput(t, p)
	}
	ledgers.sync(t, led)
	dls, err := readDeadLetters(ctx, check, DeadLetterStreamFor(stream))
	require.NoError(t, err)
	res := led.evaluate("churn", dls, nil)
	res.faults = actions["sigkill"] + actions["sigterm"] + actions["sigkill+new"]
	res.report(t)
	assert.Zero(t, res.lost, "lost ids")
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
}

// names returns the consumers' names, sorted.
func names(cs []redis.XInfoConsumer) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}
