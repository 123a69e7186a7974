package dashboard

import (
	"context"
	"sync"
	"time"
)

// sample is one stream's state at one time, for the chart: the lag and
// pending count of the inspector's group and the number of dead letters.
type sample struct {
	at                 time.Time
	lag, pending, dead int64
}

// samples are one stream's samples of the last ChartWindow, oldest first,
// and the error of the last round, if it failed.
type samples struct {
	mu      sync.Mutex
	list    []sample
	lastErr error
}

// add appends x and drops the samples older than the window before it.
func (s *samples) add(x sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = nil
	s.list = append(s.list, x)
	cut := 0
	for cut < len(s.list) && s.list[cut].at.Before(x.at.Add(-ChartWindow)) {
		cut++
	}
	if cut > 0 {
		s.list = append(s.list[:0], s.list[cut:]...)
	}
}

// failed records a failed round; it reports whether the previous round
// had succeeded (so that only the start of a failure is logged).
func (s *samples) failed(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.lastErr == nil
	s.lastErr = err
	return first
}

// snapshot returns a copy of the samples and the last round's error.
func (s *samples) snapshot() ([]sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.list...), s.lastErr
}

// Run samples every stream's lag, pending count and dead letters at once
// and then every Options.SampleInterval, for the overview's chart, until
// ctx ends; then it returns nil. It starts no goroutine: when it returns,
// sampling has stopped. A failed sample is logged (once per failure, not
// per round) and shown on the overview; Run goes on. It returns
// [ErrAlreadyRunning] when another call of Run has not returned yet.
//
// Without Run the handler works all the same; its overview then says that
// there are no samples.
func (h *Handler) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer h.running.Store(false)
	t := time.NewTicker(h.opts.SampleInterval)
	defer t.Stop()
	for {
		h.sampleAll(ctx)
		if h.sampled != nil {
			h.sampled()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sampleAll takes a sample of each stream.
func (h *Handler) sampleAll(ctx context.Context) {
	for _, s := range h.streams {
		if ctx.Err() != nil {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, max(h.opts.SampleInterval, 5*time.Second))
		x, err := h.sample(sctx, s)
		cancel()
		switch {
		case err == nil:
			s.samples.add(x)
		case ctx.Err() != nil:
			return
		case s.samples.failed(err):
			h.opts.Logger.Warn("dashboard: sample failed; retrying every interval", "stream", s.name, "err", err)
		}
	}
}

// sample reads stream s's state now.
func (h *Handler) sample(ctx context.Context, s *stream) (sample, error) {
	si, err := s.in.Info(ctx)
	if err != nil {
		return sample{}, err
	}
	x := sample{at: h.now(), dead: si.DeadLetterLength}
	if g, ok := si.Group(s.in.Config().Group); ok {
		x.lag, x.pending = g.Lag, g.Pending
	}
	return x, nil
}
