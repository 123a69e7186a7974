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
	h := newHeld()
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
	h := newHeld()
	d := h.track(deliveries("1-0"), false)[0]
	h.guard()
	h.done(d) // acknowledged while the read is under way
	assert.Empty(t, h.track(deliveries("1-0"), false), "the read's copy of an acknowledged entry is dropped")
	h.unguard()
	assert.Len(t, h.track(deliveries("1-0"), false), 1, "after the read, the id is not remembered")
}

func TestHeldNewEpochDropsOldDeliveries(t *testing.T) {
	h := newHeld()
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
	h := newHeld()
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
	h := newHeld()
	ds := h.track(deliveries("1-0", "2-0"), false)
	require.True(t, h.schedule(ds[1], 50, 10))
	lost := h.goneUnlessHeld([]string{"1-0", "2-0", "9-0"})
	assert.Equal(t, []string{"2-0", "9-0"}, lost, "a handled one is not lost; a waiting one and an unknown one are")
	due, _ := h.due(100)
	assert.Empty(t, due)
}

func TestHeldRenewedMarksLostOnce(t *testing.T) {
	h := newHeld()
	h.track(deliveries("1-0", "2-0"), false)
	ids := h.toRenew(1 << 62)
	require.Len(t, ids, 2)
	newly := h.renewed(ids, map[string]bool{"2-0": true}, 7)
	require.Len(t, newly, 1)
	assert.Equal(t, "2-0", newly[0].ID)
	assert.Empty(t, h.renewed(ids, map[string]bool{"2-0": true}, 8), "a lost entry is reported once")
	assert.Len(t, h.toRenew(1<<62), 1, "a lost entry is not renewed again")
}
