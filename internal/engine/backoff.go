package engine

import (
	"math/rand/v2"
	"time"
)

// backoff yields capped exponential waits with jitter: the n-th wait is
// drawn from [d/2, d] where d = min(base*2^n, max). It is not safe for
// concurrent use; each loop owns one.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	d := expDelay(b.base, b.max, b.n)
	b.n++
	half := int64(d / 2)
	if half <= 0 {
		return d
	}
	return time.Duration(half + rand.Int64N(half+1))
}

func (b *backoff) reset() { b.n = 0 }

// RetryDelay returns the wait before delivery n+1 of an entry whose handler
// failed: min(base*2^n, max), without overflowing.
func RetryDelay(base, max time.Duration, n int) time.Duration { return expDelay(base, max, n) }

// expDelay returns min(base*2^n, max) without overflowing.
func expDelay(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 {
		d = max
	}
	return d
}
