package inspect

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/wire"
)

// DeadLetter is an entry of a dead-letter stream, parsed (see the
// completion.DeadLetter...Field constants for the format).
type DeadLetter struct {
	// ID is the entry's id in the dead-letter stream.
	ID string
	// Ref names the dead letter for [Inspector.Redrive], [Inspector.Purge]
	// and as a start for [Inspector.DeadLetters]: ID, or of a partitioned
	// stream "PARTITION/ID" (e.g. "2/1700000000000-0").
	Ref string
	// DeadLetterStream is the key of the dead-letter stream that holds it.
	DeadLetterStream string
	// Partition is, of a partitioned stream, the index of the partition
	// the entry belongs to, and that a redrive puts it back into: the
	// partition whose dead-letter stream holds it, or, when the partitions
	// share one dead-letter stream, the partition its dl_stream field
	// names (failing that, the one completion.WithPartitions picks for its
	// task id). 0 otherwise.
	Partition int
	// Reason says why the entry was dead-lettered: one of the
	// completion.Reason constants.
	Reason string
	// Error is the error text, if there was one.
	Error string
	// Deliveries is how many times the entry had been delivered.
	Deliveries int64
	// Consumer, Group and Stream are the consumer that moved the entry,
	// its group and the stream the entry came from.
	Consumer, Group, Stream string
	// SourceID is the entry's id in the stream it came from.
	SourceID string
	// Time is when it was dead-lettered; zero if the entry does not say.
	Time time.Time
	// Fields are the original entry's fields, with the names the producer
	// gave them. A redrive writes these (in their original order).
	Fields map[string]string
	// Size, FieldCount and Excerpt describe an entry dead-lettered as too
	// big to copy (reason "oversize", more than 1000 fields or over MaxPayloadBytes): its
	// size in bytes, its number of fields and the start of its data field.
	// Such a dead letter has no Fields and cannot be redriven. Zero
	// otherwise.
	Size, FieldCount int64
	Excerpt          string
	// Message is the original message, or nil when it could not be
	// decoded; DecodeErr then says why.
	Message *completion.Message
	// DecodeErr is the reason Message is nil.
	DecodeErr error
}

// Redrivable reports whether the dead letter holds fields to put back.
func (dl DeadLetter) Redrivable() bool { return len(dl.Fields) > 0 }

// DeadLetterQuery says which dead letters [Inspector.DeadLetters] returns.
type DeadLetterQuery struct {
	// Start is where the list begins: "" or "-" for the oldest dead letter,
	// an id or a Ref (inclusive), or either prefixed with "(" (exclusive).
	Start string
	// Count is the most dead letters returned. Default DefaultCount.
	Count int
	// Reason, when set, keeps only the dead letters of this reason.
	Reason string
}

// DeadLetterPage is a page of dead letters.
type DeadLetterPage struct {
	// DeadLetters are the dead letters found, oldest first (by id, then
	// partition index).
	DeadLetters []DeadLetter
	// Next is the Start of the next page, "" when there is none. With a
	// Reason, a page may hold fewer than Count dead letters and still have
	// a next one: DeadLetters looks at most ScanLimit dead letters per call.
	// With a Reason, Next is also set when dead letters follow that were
	// not looked at, so the next page may hold none.
	Next string
}

// ScanLimit is the most dead letters one call of [Inspector.DeadLetters]
// reads while looking for those of a reason, so that a page of a rare
// reason among many dead letters costs a bounded time.
const ScanLimit = 10_000

// DeadLetters returns a page of dead letters, as q says.
func (in *Inspector) DeadLetters(ctx context.Context, q DeadLetterQuery) (DeadLetterPage, error) {
	n, err := countOf(q.Count)
	if err != nil {
		return DeadLetterPage{}, fmt.Errorf("inspect: dead letters: %w", err)
	}
	starts, err := in.startBounds(q.Start, len(in.dead), in.sourceOf)
	if err != nil {
		return DeadLetterPage{}, fmt.Errorf("inspect: dead letters: %w", err)
	}
	ends := make([]string, len(in.dead))
	for j := range ends {
		ends[j] = "+"
	}
	page := n
	if q.Reason != "" {
		page = max(n, 200)
	}
	cur, err := in.newDeadCursor(ctx, starts, ends, page)
	if err != nil {
		return DeadLetterPage{}, err
	}
	var out DeadLetterPage
	last := "" // the Ref of the last dead letter looked at
	for scanned := 0; int64(len(out.DeadLetters)) < n; scanned++ {
		if scanned == ScanLimit {
			out.Next = "(" + last
			return out, nil
		}
		m, src, ok, err := cur.next(ctx)
		if err != nil {
			return DeadLetterPage{}, err
		}
		if !ok {
			return out, nil
		}
		dl := in.deadLetterOf(src, m)
		last = dl.Ref
		if q.Reason == "" || dl.Reason == q.Reason {
			out.DeadLetters = append(out.DeadLetters, dl)
		}
	}
	more, err := cur.more(ctx)
	if err != nil {
		return DeadLetterPage{}, err
	}
	if more {
		out.Next = "(" + last
	}
	return out, nil
}

// DeadLetter returns the dead letter ref names (a full id, or of a
// partitioned stream "PARTITION/ID"), and false when there is none.
func (in *Inspector) DeadLetter(ctx context.Context, ref string) (DeadLetter, bool, error) {
	targets, err := in.locate(ctx, "dead letter", []string{ref})
	if err != nil || len(targets) == 0 {
		return DeadLetter{}, false, err
	}
	t := targets[0]
	msgs, err := in.client.XRangeN(ctx, in.dead[t.src].key, t.id, t.id, 1).Result()
	if err != nil {
		return DeadLetter{}, false, fmt.Errorf("inspect: read dead letter %s of %q: %w", t.id, in.dead[t.src].key, err)
	}
	if len(msgs) == 0 {
		return DeadLetter{}, false, nil
	}
	return in.deadLetterOf(t.src, msgs[0]), true, nil
}

// DeadLetterReasons returns how many dead letters there are of each reason.
// It reads every dead letter, a page at a time: on a dead-letter stream of
// millions, prefer DeadLetterLength of [Inspector.Info].
func (in *Inspector) DeadLetterReasons(ctx context.Context) (map[string]int64, error) {
	counts := make([]map[string]int64, len(in.dead))
	err := fanOut(ctx, len(in.dead), func(ctx context.Context, j int) error {
		c := map[string]int64{}
		start := "-"
		for start != "" {
			msgs, err := in.client.XRangeN(ctx, in.dead[j].key, start, "+", 500).Result()
			if err != nil {
				return fmt.Errorf("inspect: dead-letter reasons: read %q: %w", in.dead[j].key, err)
			}
			for _, m := range msgs {
				reason, _ := m.Values[completion.DeadLetterReasonField].(string)
				c[reason]++
			}
			start = ""
			if len(msgs) == 500 {
				start = nextID(msgs[len(msgs)-1].ID)
			}
		}
		counts[j] = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, c := range counts {
		for r, n := range c {
			out[r] += n
		}
	}
	return out, nil
}

// nextID returns the smallest id after id, "" after the largest.
func nextID(id string) string {
	a, err := parseStreamID(id, false)
	if err != nil {
		return ""
	}
	n, ok := a.next()
	if !ok {
		return ""
	}
	return n.String()
}

// deadLetterOf parses the dead letter m read from source src.
func (in *Inspector) deadLetterOf(src int, m redis.XMessage) DeadLetter {
	dl := parseDeadLetter(m)
	dl.DeadLetterStream = in.dead[src].key
	dl.Partition = in.deadLetterPartition(src, dl)
	dl.Ref = in.ref(dl.Partition, m.ID)
	return dl
}

// deadLetterPartition returns the partition of dead letter dl read from
// source src (see DeadLetter.Partition).
func (in *Inspector) deadLetterPartition(src int, dl DeadLetter) int {
	if p := in.dead[src].part; p >= 0 {
		return p
	}
	if i, ok := in.partIndex[dl.Stream]; ok {
		return i
	}
	task := ""
	if dl.Message != nil {
		task = dl.Message.TaskID
	}
	return keys.PartitionOf(task, len(in.parts))
}

func parseDeadLetter(m redis.XMessage) DeadLetter {
	dl := DeadLetter{ID: m.ID, Fields: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		s := fmt.Sprint(v)
		switch k {
		case completion.DeadLetterReasonField:
			dl.Reason = s
		case completion.DeadLetterErrorField:
			dl.Error = s
		case completion.DeadLetterDeliveriesField:
			dl.Deliveries, _ = strconv.ParseInt(s, 10, 64)
		case completion.DeadLetterConsumerField:
			dl.Consumer = s
		case completion.DeadLetterGroupField:
			dl.Group = s
		case completion.DeadLetterStreamField:
			dl.Stream = s
		case completion.DeadLetterIDField:
			dl.SourceID = s
		case completion.DeadLetterTimeField:
			dl.Time, _ = time.Parse(time.RFC3339Nano, s)
		case wire.DeadLetterSizeField:
			dl.Size, _ = strconv.ParseInt(s, 10, 64)
		case wire.DeadLetterFieldsField:
			dl.FieldCount, _ = strconv.ParseInt(s, 10, 64)
		case wire.DeadLetterExcerptField:
			dl.Excerpt = s
		default:
			if name, ok := originalField(k); ok {
				dl.Fields[name] = s
			}
		}
	}
	dl.Message, dl.DecodeErr = decodeFields(dl.Fields)
	return dl
}

// originalField maps a dead-letter field name to the original entry's field
// name, or reports false for the dead letter's own fields: a name starting
// with "orig_" loses that prefix once, other names starting with "dl_" are
// the dead letter's (see completion.DeadLetterReasonField).
func originalField(name string) (string, bool) {
	if rest, ok := strings.CutPrefix(name, "orig_"); ok {
		return rest, true
	}
	if strings.HasPrefix(name, "dl_") {
		return "", false
	}
	return name, true
}

// decodeFields decodes the message in an entry's data field.
func decodeFields(fields map[string]string) (*completion.Message, error) {
	data, ok := fields[completion.DataField]
	if !ok {
		return nil, fmt.Errorf("%w: the entry has no %q field", completion.ErrMalformed, completion.DataField)
	}
	var m completion.Message
	if err := m.UnmarshalJSON([]byte(data)); err != nil {
		return nil, err
	}
	return &m, nil
}

// deadCursor reads the dead letters of every source in one order, by id and
// then source index, a page per source at a time.
type deadCursor struct {
	in     *Inspector
	page   int64
	heads  deadHeap    // sources with buffered dead letters
	refill []*deadHead // sources whose buffer ran out, with more to read
}

// deadHead is one source's read position and buffered dead letters.
type deadHead struct {
	src   int
	start string // the next read's start; "" once the source is exhausted
	end   string
	buf   []redis.XMessage
	id    streamID // of buf[0]
}

type deadHeap []*deadHead

func (h deadHeap) Len() int { return len(h) }
func (h deadHeap) Less(i, j int) bool {
	if c := h[i].id.compare(h[j].id); c != 0 {
		return c < 0
	}
	return h[i].src < h[j].src
}
func (h deadHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadHeap) Push(x any)   { *h = append(*h, x.(*deadHead)) }
func (h *deadHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// newDeadCursor returns a cursor over the sources from starts to ends (per
// source; "" for none), having read each source's first page.
func (in *Inspector) newDeadCursor(ctx context.Context, starts, ends []string, page int64) (*deadCursor, error) {
	c := &deadCursor{in: in, page: page}
	heads := make([]*deadHead, len(in.dead))
	err := fanOut(ctx, len(in.dead), func(ctx context.Context, j int) error {
		heads[j] = &deadHead{src: j, start: starts[j], end: ends[j]}
		return c.fill(ctx, heads[j])
	})
	if err != nil {
		return nil, err
	}
	for _, h := range heads {
		if len(h.buf) > 0 {
			c.heads = append(c.heads, h)
		}
	}
	heap.Init(&c.heads)
	return c, nil
}

// fill reads h's next page.
func (c *deadCursor) fill(ctx context.Context, h *deadHead) error {
	if h.start == "" || h.end == "" {
		h.start = ""
		return nil
	}
	key := c.in.dead[h.src].key
	msgs, err := c.in.client.XRangeN(ctx, key, h.start, h.end, c.page).Result()
	if err != nil {
		return fmt.Errorf("inspect: read dead letters of %q from %s to %s: %w", key, h.start, h.end, err)
	}
	h.buf, h.start = msgs, ""
	if len(msgs) > 0 {
		h.id, _ = parseStreamID(msgs[0].ID, false)
		if int64(len(msgs)) == c.page {
			h.start = nextID(msgs[len(msgs)-1].ID) // "" after the largest id: exhausted
		}
	}
	return nil
}

// next returns the next dead letter and the index of its source, or false
// when there is none left.
func (c *deadCursor) next(ctx context.Context) (redis.XMessage, int, bool, error) {
	if err := c.refillAll(ctx); err != nil {
		return redis.XMessage{}, 0, false, err
	}
	if len(c.heads) == 0 {
		return redis.XMessage{}, 0, false, nil
	}
	h := c.heads[0]
	m := h.buf[0]
	h.buf = h.buf[1:]
	switch {
	case len(h.buf) > 0:
		h.id, _ = parseStreamID(h.buf[0].ID, false)
		heap.Fix(&c.heads, 0)
	case h.start != "":
		heap.Pop(&c.heads)
		c.refill = append(c.refill, h)
	default:
		heap.Pop(&c.heads)
	}
	return m, h.src, true, nil
}

// refillAll reads the next page of every source whose buffer ran out.
func (c *deadCursor) refillAll(ctx context.Context) error {
	for len(c.refill) > 0 {
		h := c.refill[0]
		if err := c.fill(ctx, h); err != nil {
			return err
		}
		c.refill = c.refill[1:]
		if len(h.buf) > 0 {
			heap.Push(&c.heads, h)
		}
	}
	return nil
}

// more reports whether the cursor has dead letters left. It reads the next
// page of sources whose buffer ran out, so that a source that filled its
// last page exactly does not count as having more.
func (c *deadCursor) more(ctx context.Context) (bool, error) {
	if err := c.refillAll(ctx); err != nil {
		return false, err
	}
	return len(c.heads) > 0, nil
}
