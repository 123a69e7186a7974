package completion

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// ---------------------------------------------------------------------------
// big-entries

// bigEntryBytes is the size of a big-entries completion's result: 0.88 MiB,
// under the default MaxPayloadBytes (1 MiB).
const bigEntryBytes = 922_746

// bigEntriesBudget is the consumer's MaxReadAheadBytes in big-entries.
const bigEntriesBudget = 16 << 20

// bigEntriesAllowance is what a consumer process may hold over its RSS
// before the entries arrived: the Go garbage collector lets the heap grow
// to twice the live heap (GOGC=100) before it collects, so the read-ahead
// budget counts twice; on top, go-redis's read buffers, the reply of one
// read being decoded (at most the budget's free part) and the runtime's
// own: 48 MiB. Under -race the allowance is 5 times as large: the race
// detector's shadow memory multiplies what the heap touches (measured on a
// 2-core VM: 40 MiB over the baseline without it, 262 MiB with it; with no
// effective budget, 267 and 800 MiB).
func bigEntriesAllowance() int64 {
	a := int64(2*bigEntriesBudget + 48<<20)
	if raceEnabled {
		a *= 5
	}
	return a
}

// TestFaultBigEntries: a consumer process (BatchSize 500, Concurrency 16,
// MaxReadAheadBytes 16 MiB, handlers of 100-200 ms) meets a backlog of
// completions of 0.88 MiB each (it is frozen while they are published).
// Without a byte budget one read would bring all 300 of them (264 MiB);
// with it, the consumer reads no further ahead than the budget allows, so
// its peak RSS (VmHWM) over its RSS before the burst stays within the
// budget and a documented margin (bigEntriesAllowance). Nothing may be
// lost. The child also reports its peak Go heap (logged, not asserted).
func TestFaultBigEntries(t *testing.T) {
	t.Parallel()
	scale := faultScale(t)
	n := 300
	if scale > 1 {
		n = 600
	}
	srv := redistest.Start(t, redistest.Options{})
	stream := "faults:big"
	led := newFaultLedger()
	rdb := faultClient(t, srv.Addr(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	child := startSpecChild(t, childSpec{
		Addr: srv.Addr(), Stream: stream, Consumer: "big",
		SleepMin: 100 * time.Millisecond, SleepMax: 200 * time.Millisecond,
		Concurrency: 16, BatchSize: 500, MaxReadAheadBytes: bigEntriesBudget,
		ClaimMinIdle: 10 * time.Second, HeapSample: true,
	})
	syncLedger := func() {
		if err := child.ledger.sync(led); err != nil {
			t.Logf("read the child's ledger: %v", err)
		}
	}
	// Its baseline: once it runs and has created the group.
	require.True(t, waitProgress(60*time.Second, func() bool {
		cs, err := rdb.XInfoGroups(ctx, stream).Result()
		return err == nil && len(cs) == 1 && strings.Contains(child.output(), "running (pid")
	}), "the consumer did not start")
	baseline, err := procStatus(child.pid(), "VmRSS")
	require.NoError(t, err)

	// Sample its RSS while the burst is drained, for the report.
	var mu sync.Mutex
	var samples []int64
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for ctx.Err() == nil {
			if v, err := procStatus(child.pid(), "VmRSS"); err == nil {
				mu.Lock()
				samples = append(samples, v)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	// The burst arrives as a backlog: the consumer is frozen while it is
	// published, and meets all of it when it wakes.
	big := strings.Repeat("x", bigEntryBytes)
	child.signal(syscall.SIGSTOP)
	for i := range n {
		m := faultMessage("big", i)
		m.Success, m.Error, m.Result = true, "", StringResult(big)
		id, err := Publish(ctx, rdb, stream, m, WithMaxLen(0))
		require.NoError(t, err)
		led.published(m.OperationID, id, outcomeHandled, 0)
	}
	child.signal(syscall.SIGCONT)
	ok := waitProgress(faultWait(n), func() bool { syncLedger(); return led.unhandled() == 0 && pendingOf(rdb, stream, "g") == 0 })
	if !ok {
		t.Errorf("not settled: %d unhandled, %d pending", led.unhandled(), pendingOf(rdb, stream, "g"))
	}
	peak, err := procStatus(child.pid(), "VmHWM")
	require.NoError(t, err)
	cancel()
	<-sampleDone
	require.NoError(t, child.stop(30*time.Second), "the consumer's exit")
	checkChildOutput(t, child)
	run := child.runResult()
	syncLedger()

	mu.Lock()
	var steady int64
	for _, s := range samples[len(samples)/2:] {
		steady = max(steady, s)
	}
	mu.Unlock()
	over := peak - baseline
	t.Logf("RSS before the burst %s, peak %s (%s over, allowance %s with a budget of %s; race detector: %v), highest in the second half of the drain %s; peak Go heap in use %s; one unbounded read would hold %s",
		mib(baseline), mib(peak), mib(over), mib(bigEntriesAllowance()), mib(bigEntriesBudget), raceEnabled, mib(steady), mib(run.peakHeap), mib(500*bigEntryBytes))
	res := finishScenario(t, rdb, newTestConsumer(t, rdb, anyTaskRegistry, HandlerFunc(func(context.Context, *Completion) error { return nil }), faultConfig(stream, "report", nil)), "big-entries", led, n, nil)
	assert.Zero(t, res.deadLettered, "nothing should be dead-lettered")
	assert.LessOrEqual(t, over, bigEntriesAllowance(), "peak RSS over the baseline: beyond MaxReadAheadBytes and the documented margin")
}

// procStatus returns a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
