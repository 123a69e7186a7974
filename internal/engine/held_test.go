package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func deliveries(ids ...string) []Delivery {
	ds := make([]Delivery, len(ids))
	for i, id := range ids {
		ds[i] = Delivery{ID: id, Count: 1, retryIdx: notQueued, size: 10}
	}
	return ds
}

func TestHeldTrackForgetDone(t *testing.T) {
	h := newHeld(nil)
	got := h.track(deliveries("1-0", "2-0"), false)
	require.Len(t, got, 2)
	assert.EqualValues(t, 2, h.count.Load())
	assert.EqualValues(t, 20, h.heldBytes())

	// A re-read of an entry still held is not handed out twice.
	again := h.track(deliveries("1-0", "3-0"), false)
	require.Len(t, again, 1)
	assert.Equal(t, "3-0", again[0].ID)

	h.done(got[0])
	h.forget(got[1], again[0])
	assert.Zero(t, h.count.Load())
	assert.Zero(t, h.heldBytes())
}

func TestHeldGuardRemembersAcksDuringAPendingRead(t *testing.T) {
	h := newHeld(nil)
	d := h.track(deliveries("1-0"), false)[0]
	h.guard()
	h.done(d) // acknowledged while the read is under way
	assert.Empty(t, h.track(deliveries("1-0"), false), "the read's copy of an acknowledged entry is dropped")
	h.unguard()
	assert.Len(t, h.track(deliveries("1-0"), false), 1, "after the read, the id is not remembered")
}

func TestHeldNewEpochDropsOldDeliveries(t *testing.T) {
	h := newHeld(nil)
	old := deliveries("1-0")
	h.track(old, false)
	h.newEpoch()
	assert.Zero(t, h.count.Load())
	assert.Empty(t, h.track(old, false), "a delivery of the old epoch is not tracked")
	assert.False(t, h.current(&old[0]))
	fresh := deliveries("1-0")
	fresh[0].epoch = h.currentEpoch()
	assert.Len(t, h.track(fresh, false), 1)
}

func TestHeldRetries(t *testing.T) {
	h := newHeld(nil)
	ds := h.track(deliveries("1-0", "2-0", "3-0"), false)
	require.True(t, h.schedule(ds[0], 30, 10))
	require.True(t, h.schedule(ds[1], 10, 10))
	assert.False(t, h.schedule(ds[2], 20, 2), "beyond the limit the entry is left to XAUTOCLAIM")
	assert.EqualValues(t, 2, h.count.Load())

	due, next := h.due(15)
	require.Len(t, due, 1)
	assert.Equal(t, "2-0", due[0].ID)
	assert.Equal(t, claiming, due[0].retryIdx)
	assert.EqualValues(t, 30, next)

	// A reclaim of the waiting entry preempts its retry.
	re := deliveries("1-0")
	got := h.track(re, true)
	require.Len(t, got, 1)
	due, next = h.due(100)
	assert.Empty(t, due, "the retry does not run as well")
	assert.Zero(t, next)
}

func TestHeldGoneUnlessHeld(t *testing.T) {
	h := newHeld(nil)
	var reported []string
	h.onLost = func(ids []string) { reported = append(reported, ids...) }
	ds := h.track(deliveries("1-0", "2-0", "3-0", "4-0"), false)
	require.True(t, h.schedule(ds[1], 50, 10))
	h.guard() // an XAUTOCLAIM is sent; 3-0 is acknowledged before its reply
	h.done(ds[2])
	lost := h.goneUnlessHeld([]string{"1-0", "2-0", "3-0", "4-0", "9-0"})
	h.unguard()
	assert.Equal(t, []string{"9-0"}, lost, "held ones (handled, or waiting for a retry) and one acknowledged meanwhile are not lost; an unknown one is")
	assert.True(t, ds[0].gone && ds[1].gone && ds[3].gone, "held ones are marked gone: handled from memory")
	due, _ := h.due(100)
	assert.Equal(t, []*Delivery{ds[1]}, due, "the waiting one is retried, from memory")

	// Settled: not lost. Let go unhandled: lost, and reported.
	h.done(ds[0])
	h.forget(ds[3])
	assert.Equal(t, []string{"4-0"}, reported)
	h.forgetAll()
	assert.Equal(t, []string{"4-0", "2-0"}, reported, "forgetAll reports the gone ones it drops")

	// A gone one is not turned away by the retry limit: Redis has no copy.
	h = newHeld(nil)
	ds = h.track(deliveries("5-0", "6-0"), false)
	require.True(t, h.schedule(ds[0], 50, 1))
	h.goneUnlessHeld([]string{"6-0"})
	assert.True(t, h.schedule(ds[1], 60, 1), "over the limit, but gone")
}

func TestHeldRenewedMarksLostOnce(t *testing.T) {
	h := newHeld(nil)
	h.track(deliveries("1-0", "2-0"), false)
	ids := h.toRenew(1 << 62)
	require.Len(t, ids, 2)
	taken := leaseResult{taken: map[string]bool{"2-0": true}}
	newly := h.renewed(ids, taken, 7, false)
	require.Len(t, newly, 1)
	assert.Equal(t, "2-0", newly[0].ID)
	assert.Empty(t, h.renewed(ids, taken, 8, false), "a lost entry is reported once")
	assert.Len(t, h.toRenew(1<<62), 1, "a lost entry is not renewed again")
}

// An entry acknowledged elsewhere (another consumer took it over and
// finished it) is lost while its outcome here is undecided; once decided,
// only the acker, which has not sent its XACK yet, can tell.
func TestHeldRenewedAcked(t *testing.T) {
	h := newHeld(nil)
	ds := h.track(deliveries("1-0", "2-0", "3-0"), false)
	h.settle(ds[1])
	h.settle(ds[2])
	ids := []any{"1-0", "2-0", "3-0"}
	acked := leaseResult{acked: map[string]bool{"1-0": true, "2-0": true}}
	newly := h.renewed(ids, acked, 7, false)
	require.Len(t, newly, 1)
	assert.Equal(t, "1-0", newly[0].ID, "undecided and acked elsewhere: lost")
	assert.Equal(t, int64(0), ds[1].touched, "decided and acked: neither lost nor renewed (the XACK may be this consumer's)")
	assert.Equal(t, int64(7), ds[2].touched, "renewed")

	assert.Equal(t, []*Delivery{ds[1]}, h.lapsed(ds, 5), "not renewed since before 5 and not lost")
	newly = h.renewed([]any{"2-0"}, acked, 9, true)
	require.Len(t, newly, 1)
	assert.Equal(t, "2-0", newly[0].ID, "the acker asks before its XACK: acked elsewhere")
	assert.Empty(t, h.lapsed(ds, 5))
}
