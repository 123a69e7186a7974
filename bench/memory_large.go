package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
)

// modeMemoryLarge drains backlogs of large entries and reports the peak RSS
// against the consumer's read-ahead budget (Config.MaxReadAheadBytes, 64
// MiB by default): entries just under Config.MaxPayloadBytes (1 MiB), which
// are handled, and entries ten times over it, which are dead-lettered. Not
// in the default run: it moves gigabytes through Redis.
const modeMemoryLarge = "memory-large"

// largeCase is one backlog of the memory-large mode.
type largeCase struct {
	n, size int  // entries, and bytes of each one's result
	handled bool // under MaxPayloadBytes: handled; over: dead-lettered
}

var largeCases = []largeCase{
	{n: 1000, size: 900 << 10, handled: true},
	{n: 250, size: 10 << 20, handled: false},
}

// memoryLarge runs the cases and prints a RESULT line each.
func (b *bench) memoryLarge(ctx context.Context, w io.Writer) error {
	for _, c := range largeCases {
		m, err := b.largeOnce(ctx, c)
		if err != nil {
			return fmt.Errorf("%s n=%d size=%d: %w", modeMemoryLarge, c.n, c.size, err)
		}
		outcome := "dead_lettered"
		if c.handled {
			outcome = "handled"
		}
		fmt.Fprintf(w, "RESULT impl=completion mode=%s entry_kb=%d msgs=%d outcome=%s read_ahead_mb=%d baseline_rss_mb=%.1f peak_rss_mb=%.1f peak_over_baseline_mb=%.1f heap_inuse_mb=%.1f drain_s=%.1f\n",
			modeMemoryLarge, c.size>>10, c.n, outcome, 64, m.baselineMB, m.peakMB, m.peakMB-m.baselineMB, m.heapMB, m.msgsPerS)
	}
	return nil
}

// largeOnce publishes one case's backlog, drains it with the library's
// consumer (its defaults, the handler decoding each result) while sampling
// RSS, and checks every entry was handled or dead-lettered. msgsPerS holds
// the drain's seconds.
func (b *bench) largeOnce(ctx context.Context, c largeCase) (measure, error) {
	s := b.newSession(c.n, nil)
	s.tasks, s.fx = memTasks, b.memFx
	keys := s.keys()
	defer b.rdb.Del(context.WithoutCancel(ctx), keys...)
	blob := strings.Repeat("x", c.size)
	for i := range c.n {
		msg := message(i % memTasks)
		msg.Result = []byte(`{"t":1,"blob":"` + blob + `"}`)
		if _, err := completion.Publish(ctx, b.rdb, s.stream, msg, completion.WithMaxLen(0)); err != nil {
			return measure{}, err
		}
	}
	if err := b.createGroup(ctx, s); err != nil {
		return measure{}, err
	}
	baseline, smp, err := startSampling()
	if err != nil {
		return measure{}, err
	}
	start := time.Now()
	im := impl{name: "completion", concurrency: 16, run: runCompletion}
	r := b.start(ctx, im, s)
	err = b.waitSettled(ctx, s, c, r)
	elapsed := time.Since(start)
	peak, heap, serr := smp.halt()
	r.abort()
	if err == nil {
		err = serr
	}
	if err != nil {
		return measure{}, err
	}
	fmt.Fprintf(os.Stderr, "%s: %d entries of %d KiB settled in %v; peak-baseline %.1f MB\n",
		modeMemoryLarge, c.n, c.size>>10, elapsed.Round(time.Millisecond), mb(peak)-mb(baseline))
	return measure{baselineMB: mb(baseline), peakMB: mb(peak), heapMB: mb(heap), msgsPerS: elapsed.Seconds()}, nil
}

// waitSettled waits until every entry of the case was handled, or moved to
// the dead-letter stream, and nothing is pending.
func (b *bench) waitSettled(ctx context.Context, s *session, c largeCase, r *running) error {
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		dead, err := b.rdb.XLen(ctx, s.keys()[1]).Result()
		if err != nil {
			return err
		}
		p, err := b.rdb.XPending(ctx, s.stream, s.group).Result()
		if err != nil && err != redis.Nil {
			return err
		}
		switch {
		case c.handled && s.handled.Load() == int64(c.n) && p.Count == 0:
			return nil
		case !c.handled && dead == int64(c.n) && p.Count == 0:
			if s.handled.Load() != 0 {
				return fmt.Errorf("%d oversize entries reached the handler", s.handled.Load())
			}
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("not settled: handled %d, dead-lettered %d, pending %d", s.handled.Load(), dead, p.Count)
		}
		select {
		case err := <-r.errc:
			return fmt.Errorf("the consumer stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
