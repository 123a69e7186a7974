package completion

// The fault suite's helpers, for its scenarios in package completion_test:
// those that import a package which imports this one (redisregistry), which
// package completion's own tests cannot.

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FaultLedger is the fault suite's ledger (see faultLedger).
type FaultLedger struct{ l *faultLedger }

// NewFaultLedger returns an empty ledger.
func NewFaultLedger() *FaultLedger { return &FaultLedger{l: newFaultLedger()} }

// Published records an id published (by Publish, which returned entryID)
// that wants want: "" (handled) or a dead-letter reason.
func (l *FaultLedger) Published(key, entryID, want string) { l.l.published(key, entryID, want, 0) }

// Handler returns the suite's recording handler (see recordingHandler).
func (l *FaultLedger) Handler(consumer string, lo, hi time.Duration) CompletionHandler {
	return recordingHandler(l.l, consumer, lo, hi)
}

// Unhandled returns how many ids that want handling have not been handled.
func (l *FaultLedger) Unhandled() int { return l.l.unhandled() }

// DeadLettersReady reports whether every id that wants a dead letter has
// one in stream.
func (l *FaultLedger) DeadLettersReady(rdb *redis.Client, stream string) bool {
	dls, err := readDeadLetters(context.Background(), rdb, stream)
	if err != nil {
		return false
	}
	have := map[string]bool{}
	for _, d := range dls {
		have[d.sourceID] = true
	}
	for _, r := range l.l.records() {
		if r.want != outcomeHandled && !have[r.entryID] {
			return false
		}
	}
	return true
}

// FaultResult is a scenario's ledger line.
type FaultResult struct {
	Published, Handled, DeadLettered, Lost, Duplicates, Faults, Excused int
	// DeadLetters counts the dead letters by reason.
	DeadLetters map[string]int
}

// Finish reads the dead letters of deadLetterStream, evaluates the ledger,
// prints the scenario's FAULTS line and returns it.
func (l *FaultLedger) Finish(t *testing.T, rdb *redis.Client, deadLetterStream, scenario string, faults int) FaultResult {
	t.Helper()
	dls, err := readDeadLetters(context.Background(), rdb, deadLetterStream)
	if err != nil {
		t.Fatalf("read the dead letters: %v", err)
	}
	res := l.l.evaluate(scenario, dls, nil)
	res.faults = faults
	res.report(t)
	out := FaultResult{Published: res.published, Handled: res.handled, DeadLettered: res.deadLettered, Lost: res.lost,
		Duplicates: res.duplicates, Faults: res.faults, Excused: res.excused, DeadLetters: map[string]int{}}
	for _, d := range dls {
		out.DeadLetters[d.reason]++
	}
	return out
}

// FaultScale is faultScale.
func FaultScale(t testing.TB) int { return faultScale(t) }

// FaultCount is faultCount.
func FaultCount(base, scale int) int { return faultCount(base, scale) }

// FaultWait is faultWait.
func FaultWait(n int) time.Duration { return faultWait(n) }

// FaultConfig is faultConfig.
func FaultConfig(stream, name string, logger *slog.Logger) Config {
	return faultConfig(stream, name, logger)
}

// FaultLogger is faultLogger.
func FaultLogger(t testing.TB, name string) *slog.Logger { return faultLogger(t, name) }

// FaultClient is faultClient.
func FaultClient(t testing.TB, addr string, tweak func(*redis.Options)) *redis.Client {
	return faultClient(t, addr, tweak)
}

// FaultMessage is faultMessage.
func FaultMessage(prefix string, i int) Message { return faultMessage(prefix, i) }

// PendingOf is pendingOf.
func PendingOf(rdb *redis.Client, stream, group string) int64 { return pendingOf(rdb, stream, group) }

// WaitProgress is waitProgress.
func WaitProgress(d time.Duration, cond func() bool) bool { return waitProgress(d, cond) }

// StartConsumer is startConsumer.
func StartConsumer(t testing.TB, c *Consumer) (stop func() error) { return startConsumer(t, c) }

// FaultHold lets d of wall time pass on purpose (see faultHold).
func FaultHold(d time.Duration) { faultHold(d) }
