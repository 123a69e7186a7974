package dashboard

import "time"

// SetClock makes h read the time from now.
func SetClock(h *Handler, now func() time.Time) { h.now = now }

// OnSample makes h call f after each round of samples of Run.
func OnSample(h *Handler, f func()) { h.sampled = f }
