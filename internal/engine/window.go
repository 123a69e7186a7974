package engine

import "github.com/redis/go-redis/v9"

// window decides how many entries one read may bring in. Redis cannot
// bound a reply by bytes, only by COUNT, so the count is planned from the
// read-ahead budget's free part and the size of an entry: MaxPayloadBytes
// (the largest an entry that is handled may be), or the largest read
// lately, decaying back. Oversize entries (dead-lettered unhandled) can be
// far larger than any plan, so the window also starts small (four
// entries), drops to one after a read brings entries larger than planned,
// and grows fourfold after each full read (4, 16, 64, ...: a backlog of
// small entries reaches BatchSize within three reads). A backlog of 10 MiB
// entries is then read four, then one at a time, and at most six when the
// budget has room for six, instead of BatchSize at once.
//
// A capped read (the blocking reader's, on a connection that cuts a reply
// off at the budget's free part: capped.go) needs no such care for its
// bound, and is planned at the size of the entries seen lately instead
// (seen, cappedCount), so that small entries are read BatchSize at a time.
//
// The reader and the reclaimer each own one.
type window struct {
	floor int // MaxPayloadBytes
	est   int // the size an entry is planned at
	limit int // the most the next read may ask for
	// seen is the largest entry seen lately, decaying faster than est and
	// down to seenFloor, not to MaxPayloadBytes: what a capped read (see
	// capped.go), whose reply cannot outgrow the budget, is planned at.
	seen int
}

// seenFloor is the least size a capped read plans an entry at.
const seenFloor = 1 << 10

// windowStart is the window's first size, and windowGrowth its growth
// after a full read.
const (
	windowStart  = 4
	windowGrowth = 4
)

func newWindow(maxPayload int) window {
	floor := max(maxPayload, 1)
	return window{floor: floor, est: floor, limit: windowStart, seen: floor}
}

// count returns how many entries the next read may ask for: at most batch,
// the window, and what fits in free bytes at the planned size. 0 means none
// fits.
func (w *window) count(free int64, batch int) int {
	n := free / int64(w.est)
	return int(min(n, int64(w.limit), int64(batch)))
}

// observe updates the plan from a read that asked for asked entries and
// brought msgs.
func (w *window) observe(msgs []redis.XMessage, asked, batch int) {
	largest := 0
	for i := range msgs {
		largest = max(largest, entrySize(&msgs[i]))
	}
	switch {
	case largest > w.est:
		w.limit = 1 // a surprise: start again
	case len(msgs) >= asked:
		w.limit = min(windowGrowth*w.limit, batch)
	}
	w.est = max(largest, w.est*3/4, w.floor)
	w.seen = max(largest, w.seen/4, seenFloor) // the cap, not the plan, bounds a capped read: follow the entries fast
}

// cappedCount is count for a capped read: entries planned at the size of
// those seen lately while they are small (under a sixteenth of
// MaxPayloadBytes), where the read size is what costs; larger ones as
// count plans them, which keeps the heap's margin under the budget (their
// reads are few beside what handling them costs).
func (w *window) cappedCount(free int64, batch int) int {
	size := w.seen
	if size*16 >= w.floor {
		size = w.est
	}
	n := free / int64(size)
	return int(min(n, int64(w.limit), int64(batch)))
}

// capped updates the plan after a capped read of asked entries outgrew
// free bytes: they average more than free/asked, and the next read of new
// entries starts again from one.
func (w *window) capped(free int64, asked int) {
	w.seen = max(w.seen, int(min(free/int64(max(asked, 1)), int64(w.floor))))
	w.limit = 1
}
