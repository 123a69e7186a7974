package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// memTasks is how many tasks the memory mode's registry holds: message i
// refers to task i % memTasks, so that the registry does not grow with the
// backlog and only the consumer's own memory is measured.
const memTasks = 1000

// rssEvery is how often the memory mode samples the process's RSS.
const rssEvery = 20 * time.Millisecond

// parseMemN reads -memn: positive backlog sizes, comma separated.
func parseMemN(s string) ([]int, error) {
	var ns []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-memn: %q is not a positive number of messages", f)
		}
		ns = append(ns, n)
	}
	if len(ns) == 0 {
		return nil, errors.New("-memn: no backlog size given")
	}
	return ns, nil
}

// readRSS returns this process's resident set size (VmRSS) in bytes.
func readRSS() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		v, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(v) // "123456", "kB"
		if len(f) != 2 || string(f[1]) != "kB" {
			break
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/self/status: VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("/proc/self/status: no VmRSS line in kB")
}

// rssSampler reads the process's RSS every rssEvery until halted and keeps
// the highest reading, with the Go heap in use (runtime.MemStats.HeapInuse)
// read when that reading was taken.
type rssSampler struct {
	stop, done chan struct{}
	peak, heap uint64
	samples    int
	err        error
}

// sampleRSS starts a sampler whose peak starts at the given reading.
// startSampling collects garbage, returns freed memory to the OS, takes the
// baseline RSS and starts sampling from there.
func startSampling() (baseline uint64, smp *rssSampler, err error) {
	runtime.GC()
	debug.FreeOSMemory()
	baseline, err = readRSS()
	if err != nil {
		return 0, nil, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return baseline, sampleRSS(baseline, ms.HeapInuse), nil
}

func sampleRSS(rss, heap uint64) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{}), peak: rss, heap: heap}
	go s.loop()
	return s
}

func (s *rssSampler) loop() {
	defer close(s.done)
	t := time.NewTicker(rssEvery)
	defer t.Stop()
	var ms runtime.MemStats
	sample := func() bool {
		rss, err := readRSS()
		if err != nil {
			s.err = err
			return false
		}
		s.samples++
		if rss > s.peak {
			// ReadMemStats stops the world: only at a new peak.
			runtime.ReadMemStats(&ms)
			s.peak, s.heap = rss, ms.HeapInuse
		}
		return true
	}
	for sample() {
		select {
		case <-s.stop:
			sample() // the state at the end of the drain
			return
		case <-t.C:
		}
	}
}

// halt stops the sampler after one last sample and returns the peak RSS and
// the heap in use at that sample, in bytes.
func (s *rssSampler) halt() (peak, heap uint64, err error) {
	close(s.stop)
	<-s.done
	return s.peak, s.heap, s.err
}

func mb(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

// memory pre-publishes n messages on a fresh stream, then drains them with
// the consumer while sampling the process's RSS. Before the drain the
// program collects garbage and returns freed memory to the OS, and takes
// the baseline RSS; the end RSS is taken as soon as every message is
// handled and acknowledged, the consumer still running.
func (b *bench) memory(ctx context.Context, im impl, n int) (measure, error) {
	s := b.newSession(n, nil)
	s.tasks, s.fx = memTasks, b.memFx
	defer b.rdb.Del(context.WithoutCancel(ctx), s.keys()...)
	if err := b.publishBacklog(ctx, s, im.format, n); err != nil {
		return measure{}, err
	}
	if err := b.createGroup(ctx, s); err != nil {
		return measure{}, err
	}

	baseline, smp, err := startSampling()
	if err != nil {
		return measure{}, err
	}
	start := time.Now()
	r := b.start(ctx, im, s)
	if err := b.waitDrained(ctx, s, r, 10*time.Minute); err != nil {
		r.abort()
		_, _, _ = smp.halt()
		return measure{}, err
	}
	elapsed := time.Since(start)
	peak, heap, err := smp.halt()
	if err != nil {
		r.abort()
		return measure{}, err
	}
	end, err := readRSS()
	if err != nil {
		r.abort()
		return measure{}, err
	}
	if err := b.finish(ctx, s, r); err != nil {
		return measure{}, err
	}
	fmt.Fprintf(os.Stderr, "memory: drained %d messages in %v (%.0f msgs/s), %d RSS samples; peak-baseline %.1f MB\n",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), smp.samples, mb(peak)-mb(baseline))
	return measure{
		baselineMB: mb(baseline),
		peakMB:     mb(peak),
		endMB:      mb(end),
		heapMB:     mb(heap),
	}, nil
}
