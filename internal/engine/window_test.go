package engine

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// entries returns n entries whose data field holds size bytes.
func entries(n, size int) []redis.XMessage {
	msgs := make([]redis.XMessage, n)
	for i := range msgs {
		msgs[i] = redis.XMessage{ID: "1-1", Values: map[string]any{"data": strings.Repeat("x", size)}}
	}
	return msgs
}

func TestWindowStartsSmallAndGrowsOnFullReads(t *testing.T) {
	const mib, batch = 1 << 20, 100
	w := newWindow(mib)
	free := int64(64 * mib)
	assert.Equal(t, windowStart, w.count(free, batch), "the first read asks for a few entries")
	var got []int
	for range 4 {
		n := w.count(free, batch)
		got = append(got, n)
		w.observe(entries(n, 10), n, batch)
	}
	// 64 MiB free at 1 MiB an entry caps the count at 64 until the plan
	// decays towards MaxPayloadBytes (it never goes below).
	assert.Equal(t, []int{4, 16, 64, 64}, got)

	// A partial read does not grow the window.
	w = newWindow(mib)
	w.observe(entries(2, 10), 4, batch)
	assert.Equal(t, 4, w.count(free, batch))
}

func TestWindowShrinksOnLargerEntries(t *testing.T) {
	const mib, batch = 1 << 20, 100
	free := int64(64 * mib)
	w := newWindow(mib)
	for range 3 {
		n := w.count(free, batch)
		w.observe(entries(n, 10), n, batch)
	}
	assert.Equal(t, 64, w.count(free, batch))

	// Entries of 10 MiB arrive: one at a time, then no more than the
	// budget holds at their size.
	w.observe(entries(64, 10*mib), 64, batch)
	assert.Equal(t, 1, w.count(free, batch))
	var got []int
	for range 3 {
		n := w.count(free, batch)
		got = append(got, n)
		w.observe(entries(n, 10*mib), n, batch)
	}
	assert.Equal(t, []int{1, 4, 6}, got, "64 MiB holds six entries of 10 MiB")
	assert.Equal(t, 0, w.count(5*mib, batch), "no room for one")

	// Small entries again: the plan decays back to MaxPayloadBytes.
	for range 20 {
		n := max(w.count(free, batch), 1)
		w.observe(entries(n, 10), n, batch)
	}
	assert.Equal(t, 64, w.count(free, batch))
	assert.Equal(t, mib, w.est)
}

// A capped read plans small entries at their size, so that a backlog of
// them is read BatchSize at a time, and large ones (a sixteenth of
// MaxPayloadBytes and more) as an uncapped read does; a cut read starts
// again from one entry, planned at no less than the cut reply's average.
func TestWindowCappedCount(t *testing.T) {
	const mib, batch = 1 << 20, 500
	free := int64(64 * mib)
	smallBacklog := func() window {
		w := newWindow(mib)
		for range 6 {
			n := w.cappedCount(free, batch)
			w.observe(entries(n, 200), n, batch)
		}
		return w
	}
	w := smallBacklog()
	assert.Equal(t, batch, w.cappedCount(free, batch), "small entries: BatchSize at a time")
	assert.Equal(t, 64, w.count(free, batch), "an uncapped read still plans at MaxPayloadBytes")

	w.observe(entries(4, 100<<10), 4, batch)
	assert.Equal(t, w.count(free, batch), w.cappedCount(free, batch), "large entries: planned as uncapped reads are")

	w = smallBacklog()
	w.capped(free, batch)
	assert.Equal(t, 1, w.cappedCount(free, batch), "a cut read starts again from one")
	assert.GreaterOrEqual(t, w.seen, int(free/batch))
}
