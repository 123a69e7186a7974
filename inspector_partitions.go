package completion

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
)

// This file holds the Inspector of a partitioned stream
// (InspectorConfig.Partitions > 1): it keeps one Inspector of a single
// stream per partition and combines what they find. No Redis command
// touches the keys of two partitions, so it works on Redis Cluster, where
// the partitions live on different masters.

// ErrAmbiguousID is returned (wrapped) by [Inspector.Redrive] and
// [Inspector.Purge] of a partitioned stream when a dead-letter id given
// without its partition is in the dead-letter streams of several
// partitions. Nothing is moved or deleted then; the error names the
// candidates as "PARTITION/ID": give the one meant.
var ErrAmbiguousID = errors.New("completion: dead-letter id is in several partitions")

// partitionWorkers bounds how many partitions an Inspector reads at once.
const partitionWorkers = 8

// checkPartitions applies the Consumer's rules for Config.Partitions to an
// InspectorConfig, so that an Inspector accepts exactly the partitioned
// streams a Consumer accepts, with the same errors.
func checkPartitions(stream string, partitions int) error {
	_, err := Config{Stream: stream, Partitions: partitions, Consumer: "inspector"}.withDefaults()
	return err
}

// newPartitionedInspector returns the Inspector of the cfg.Partitions
// partitions of cfg.Stream; cfg has been checked and its defaults filled.
func newPartitionedInspector(client InspectorClient, cfg InspectorConfig) (*Inspector, error) {
	n := cfg.Partitions
	in := &Inspector{
		client:     client,
		cfg:        cfg,
		parts:      make([]*Inspector, n),
		partIndex:  make(map[string]int, n),
		sharedDead: cfg.DeadLetterStream != "",
	}
	for i := range in.parts {
		key := PartitionStream(cfg.Stream, i, n)
		dead := cfg.DeadLetterStream
		if dead == "" {
			dead = DeadLetterStreamFor(key) // as Consumer.partitionConfigs
		}
		if dead == key {
			return nil, fmt.Errorf("%w: DeadLetterStream is %q, the key of partition %d of %d; it must differ from every partition's key", ErrInvalidConfig, dead, i, n)
		}
		in.parts[i] = &Inspector{
			client: client,
			cfg:    InspectorConfig{Stream: key, Group: cfg.Group, DeadLetterStream: dead},
			atomic: keys.TopologyOf(client).SameNode(key, dead),
		}
		in.partIndex[key] = i
	}
	return in, nil
}

// PartitionFor returns the partition that [Publish] with [WithPartitions]
// (and so [Inspector.PublishTest]) puts the completions of task taskID in:
// its index and its key. Of a stream that is not partitioned it returns 0
// and the inspector's Stream.
func (in *Inspector) PartitionFor(taskID string) (int, string) {
	if in.parts == nil {
		return 0, in.cfg.Stream
	}
	i := keys.PartitionOf(taskID, len(in.parts))
	return i, in.parts[i].cfg.Stream
}

// parallel calls f(ctx, i) for each i from 0 to n-1, at most
// partitionWorkers at a time, and returns once every call has returned:
// nil, or the first error. After an error the other calls' context is
// cancelled and calls not yet started are skipped.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 1 {
		return f(ctx, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, partitionWorkers)
	skipped := false
	for i := range n {
		sem <- struct{}{}
		if ctx.Err() != nil {
			skipped = true
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	if first == nil && skipped {
		first = ctx.Err() // the caller's context ended before every call ran
	}
	return first
}

// ---------------------------------------------------------------------------
// Info and pending entries

func (in *Inspector) infoPartitioned(ctx context.Context) (StreamInfo, error) {
	parts := make([]StreamInfo, len(in.parts))
	err := parallel(ctx, len(in.parts), func(ctx context.Context, i int) error {
		var err error
		parts[i], err = in.parts[i].Info(ctx)
		return err
	})
	if err != nil {
		return StreamInfo{}, err
	}
	err = parallel(ctx, len(in.parts), func(ctx context.Context, i int) error {
		owner, err := in.client.Get(ctx, keys.Owner(in.cfg.Stream, i, len(in.parts), in.cfg.Group)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("reading the owner of partition %d: %w", i, err)
		}
		parts[i].Owner = owner
		return nil
	})
	if err != nil {
		return StreamInfo{}, err
	}
	return in.mergeInfo(parts), nil
}

// mergeInfo returns the totals over the partitions' states, with the
// states themselves in Partitions.
func (in *Inspector) mergeInfo(parts []StreamInfo) StreamInfo {
	si := StreamInfo{Stream: in.cfg.Stream, DeadLetterStream: in.cfg.DeadLetterStream, Partitions: parts}
	groups := map[string]*GroupInfo{}
	consumers := map[string]map[string]*ConsumerInfo{}
	for _, p := range parts {
		si.Exists = si.Exists || p.Exists
		si.Length += p.Length
		if p.FirstID != "" && (si.FirstID == "" || compareStreamIDs(p.FirstID, si.FirstID) < 0) {
			si.FirstID = p.FirstID
		}
		if p.LastID != "" && (si.LastID == "" || compareStreamIDs(p.LastID, si.LastID) > 0) {
			si.LastID = p.LastID
		}
		if in.sharedDead {
			si.DeadLetterLength = max(si.DeadLetterLength, p.DeadLetterLength) // one stream, read once per partition
		} else {
			si.DeadLetterLength += p.DeadLetterLength
		}
		for _, pg := range p.Groups {
			g := groups[pg.Name]
			if g == nil {
				g = &GroupInfo{Name: pg.Name, LagKnown: true, LastDeliveredID: pg.LastDeliveredID}
				groups[pg.Name] = g
				consumers[pg.Name] = map[string]*ConsumerInfo{}
			}
			g.Pending += pg.Pending
			g.EntriesRead += pg.EntriesRead
			if pg.LagKnown {
				g.Lag += pg.Lag
			} else {
				g.LagKnown = false
			}
			if compareStreamIDs(pg.LastDeliveredID, g.LastDeliveredID) > 0 {
				g.LastDeliveredID = pg.LastDeliveredID
			}
			for _, pc := range pg.Consumers {
				c := consumers[pg.Name][pc.Name]
				if c == nil {
					c = &ConsumerInfo{Name: pc.Name, Idle: pc.Idle}
					consumers[pg.Name][pc.Name] = c
				}
				c.Pending += pc.Pending
				c.Idle = min(c.Idle, pc.Idle)
			}
		}
	}
	for name, g := range groups {
		for _, c := range consumers[name] {
			g.Consumers = append(g.Consumers, *c)
		}
		sort.Slice(g.Consumers, func(i, j int) bool { return g.Consumers[i].Name < g.Consumers[j].Name })
		si.Groups = append(si.Groups, *g)
	}
	sort.Slice(si.Groups, func(i, j int) bool { return si.Groups[i].Name < si.Groups[j].Name })
	return si
}

func (in *Inspector) pendingPartitioned(ctx context.Context, group string, n int64) ([]PendingEntry, error) {
	lists := make([][]PendingEntry, len(in.parts))
	noGroup := make([]error, len(in.parts))
	err := parallel(ctx, len(in.parts), func(ctx context.Context, i int) error {
		entries, err := in.parts[i].Pending(ctx, group, int(n))
		if redis.HasErrorPrefix(err, "NOGROUP") {
			noGroup[i] = err
			return nil
		}
		for j := range entries {
			entries[j].Partition = i
		}
		lists[i] = entries
		return err
	})
	if err != nil {
		return nil, err
	}
	missing := 0
	for _, err := range noGroup {
		if err != nil {
			missing++
		}
	}
	if missing == len(in.parts) {
		var re redis.Error
		errors.As(noGroup[0], &re)
		return nil, fmt.Errorf("completion: pending entries of group %q: none of the %d partitions of stream %q has the group (check the group and stream names, and the number of partitions): %w",
			group, len(in.parts), in.cfg.Stream, re)
	}
	var out []PendingEntry
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := compareStreamIDs(out[i].ID, out[j].ID); c != 0 {
			return c < 0
		}
		return out[i].Partition < out[j].Partition
	})
	if int64(len(out)) > n {
		out = out[:n]
	}
	if out == nil {
		out = []PendingEntry{}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Stream ids and refs

// streamID is a parsed stream entry id.
type streamID struct{ ms, seq uint64 }

// parseStreamID parses "ms-seq" or "ms". "ms" alone means sequence 0, or,
// as the end of a range (end true), the largest sequence: as Redis reads
// range bounds.
func parseStreamID(s string, end bool) (streamID, error) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("%q is not a stream id (like 1700000000000-0)", s)
	}
	id := streamID{ms: ms}
	switch {
	case hasSeq:
		if id.seq, err = strconv.ParseUint(seqPart, 10, 64); err != nil {
			return streamID{}, fmt.Errorf("%q is not a stream id (like 1700000000000-0)", s)
		}
	case end:
		id.seq = ^uint64(0)
	}
	return id, nil
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

func (a streamID) compare(b streamID) int {
	return cmp.Or(cmp.Compare(a.ms, b.ms), cmp.Compare(a.seq, b.seq))
}

// next returns the smallest id greater than a, and false if there is none.
func (a streamID) next() (streamID, bool) {
	switch {
	case a.seq != ^uint64(0):
		return streamID{a.ms, a.seq + 1}, true
	case a.ms != ^uint64(0):
		return streamID{a.ms + 1, 0}, true
	}
	return streamID{}, false
}

// prev returns the largest id less than a, and false if there is none.
func (a streamID) prev() (streamID, bool) {
	switch {
	case a.seq != 0:
		return streamID{a.ms, a.seq - 1}, true
	case a.ms != 0:
		return streamID{a.ms - 1, ^uint64(0)}, true
	}
	return streamID{}, false
}

// compareStreamIDs orders two stream ids as Redis does; text that is not an id
// compares as text.
func compareStreamIDs(a, b string) int {
	x, errA := parseStreamID(a, false)
	y, errB := parseStreamID(b, false)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return x.compare(y)
}

// position is a place in the order of a partitioned stream's entries or
// dead letters: by id, then partition. part is -1 for a bare id, which
// stands for that id in every partition.
type position struct {
	part int
	id   streamID
}

// parsePosition parses "PARTITION/ID" or a bare "ID" (see parseStreamID for
// end).
func (in *Inspector) parsePosition(s string, end bool) (position, error) {
	p, idText, qualified := strings.Cut(s, "/")
	pos := position{part: -1}
	if qualified {
		i, err := strconv.Atoi(p)
		if err != nil || i < 0 || i >= len(in.parts) || strconv.Itoa(i) != p {
			return position{}, fmt.Errorf("%q: want PARTITION/ID with a partition from 0 to %d (the stream has %d partitions), e.g. %d/1700000000000-0",
				s, len(in.parts)-1, len(in.parts), len(in.parts)-1)
		}
		pos.part = i
	} else {
		idText = s
	}
	id, err := parseStreamID(idText, end)
	if err != nil {
		return position{}, fmt.Errorf("%q is not an id: want ID or PARTITION/ID, e.g. 1700000000000-0 or %d/1700000000000-0", s, len(in.parts)-1)
	}
	pos.id = id
	return pos, nil
}

// firstAfter returns, for the stream of partition (or dead-letter source)
// j, the first id of the range that opens at pos: at it when inclusive,
// after it otherwise. Of a bare id every partition starts at (or after) the
// id; of a Ref, partitions before pos's start after the id, those after it
// at the id. It returns false when no id qualifies.
func (pos position) firstAfter(j int, inclusive bool) (streamID, bool) {
	at := pos.part < 0 && inclusive || pos.part >= 0 && (j > pos.part || j == pos.part && inclusive)
	if at {
		return pos.id, true
	}
	return pos.id.next()
}

// ---------------------------------------------------------------------------
// Dead letters

// deadSource is a dead-letter stream of a partitioned stream.
type deadSource struct {
	key  string
	part int // the partition whose dead letters it holds; -1: shared by all
}

// deadSources returns the dead-letter streams: one per partition, by
// partition index, or the one they share.
func (in *Inspector) deadSources() []deadSource {
	if in.sharedDead {
		return []deadSource{{key: in.cfg.DeadLetterStream, part: -1}}
	}
	srcs := make([]deadSource, len(in.parts))
	for i, p := range in.parts {
		srcs[i] = deadSource{key: p.cfg.DeadLetterStream, part: i}
	}
	return srcs
}

// sourceOf returns the index of the dead-letter source that holds
// partition part's dead letters.
func (in *Inspector) sourceOf(part int) int {
	if in.sharedDead {
		return 0
	}
	return part
}

// deadLetterPartition returns the partition a dead letter read from src
// belongs to (see DeadLetter.Partition).
func (in *Inspector) deadLetterPartition(src deadSource, dl DeadLetter) int {
	if src.part >= 0 {
		return src.part
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

// deadLetterOf parses the dead letter m read from src.
func (in *Inspector) deadLetterOf(src deadSource, m redis.XMessage) DeadLetter {
	dl := parseDeadLetter(m)
	dl.DeadLetterStream = src.key
	dl.Partition = in.deadLetterPartition(src, dl)
	dl.Ref = strconv.Itoa(dl.Partition) + "/" + m.ID
	return dl
}

// startBounds returns each source's first id (for XRANGE) of the range
// that start opens: "" or "-" for the oldest, an id or a Ref, inclusive,
// or either prefixed with "(", exclusive. An empty bound means nothing.
func (in *Inspector) startBounds(start string, srcs []deadSource) ([]string, error) {
	out := make([]string, len(srcs))
	if start == "" || start == "-" {
		for j := range out {
			out[j] = "-"
		}
		return out, nil
	}
	inclusive := !strings.HasPrefix(start, "(")
	pos, err := in.parsePosition(strings.TrimPrefix(start, "("), false)
	if err != nil {
		return nil, fmt.Errorf("start %w", err)
	}
	if pos.part >= 0 {
		pos.part = in.sourceOf(pos.part)
	}
	for j := range out {
		if id, ok := pos.firstAfter(j, inclusive); ok {
			out[j] = id.String()
		}
	}
	return out, nil
}

// endBounds returns each source's last id (for XRANGE) of the range that
// end closes, inclusive: "" or "+" for each source's newest dead letter
// now, an id, or a Ref. An empty bound means nothing.
func (in *Inspector) endBounds(ctx context.Context, end string, srcs []deadSource) ([]string, error) {
	out := make([]string, len(srcs))
	if end == "" || end == "+" {
		err := parallel(ctx, len(srcs), func(ctx context.Context, j int) error {
			last, err := in.client.XRevRangeN(ctx, srcs[j].key, "+", "-", 1).Result()
			if err != nil {
				return fmt.Errorf("completion: redrive: read the newest dead letter of %q: %w", srcs[j].key, err)
			}
			if len(last) > 0 {
				out[j] = last[0].ID
			}
			return nil
		})
		return out, err
	}
	pos, err := in.parsePosition(end, true)
	if err != nil {
		return nil, fmt.Errorf("completion: redrive: end %w", err)
	}
	for j := range out {
		switch {
		case pos.part < 0 || j <= in.sourceOf(pos.part):
			out[j] = pos.id.String()
		default: // a later source: its entries of the same id come after pos
			if id, ok := pos.id.prev(); ok {
				out[j] = id.String()
			}
		}
	}
	return out, nil
}

// deadCursor reads the dead letters of several sources in one order, by id
// and then source index, a page per source at a time.
type deadCursor struct {
	in     *Inspector
	srcs   []deadSource
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

// newDeadCursor returns a cursor over srcs from starts to ends (per source;
// "" for none), having read each source's first page.
func (in *Inspector) newDeadCursor(ctx context.Context, srcs []deadSource, starts, ends []string, page int64) (*deadCursor, error) {
	c := &deadCursor{in: in, srcs: srcs, page: page}
	heads := make([]*deadHead, len(srcs))
	err := parallel(ctx, len(srcs), func(ctx context.Context, j int) error {
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
	key := c.srcs[h.src].key
	msgs, err := c.in.client.XRangeN(ctx, key, h.start, h.end, c.page).Result()
	if err != nil {
		return fmt.Errorf("completion: read dead letters of %q from %s to %s: %w", key, h.start, h.end, err)
	}
	h.buf, h.start = msgs, ""
	if len(msgs) > 0 {
		h.id, _ = parseStreamID(msgs[0].ID, false)
		if int64(len(msgs)) == c.page {
			h.start, _ = nextID(msgs[len(msgs)-1].ID) // "" after the largest id: exhausted
		}
	}
	return nil
}

// next returns the next dead letter and the index of its source, or false
// when there is none left.
func (c *deadCursor) next(ctx context.Context) (redis.XMessage, int, bool, error) {
	for len(c.refill) > 0 {
		h := c.refill[0]
		if err := c.fill(ctx, h); err != nil {
			return redis.XMessage{}, 0, false, err
		}
		c.refill = c.refill[1:]
		if len(h.buf) > 0 {
			heap.Push(&c.heads, h)
		}
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

func (in *Inspector) deadLettersPartitioned(ctx context.Context, start string, n int64) ([]DeadLetter, error) {
	srcs := in.deadSources()
	starts, err := in.startBounds(start, srcs)
	if err != nil {
		return nil, fmt.Errorf("completion: dead letters: %w", err)
	}
	ends := make([]string, len(srcs))
	for j := range ends {
		ends[j] = "+"
	}
	cur, err := in.newDeadCursor(ctx, srcs, starts, ends, n)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, min(n, DefaultInspectCount))
	for int64(len(out)) < n {
		m, src, ok, err := cur.next(ctx)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		out = append(out, in.deadLetterOf(srcs[src], m))
	}
	return out, nil
}

// deadTarget is a dead letter a redrive or purge acts on.
type deadTarget struct {
	src  int    // its source
	part int    // its partition (-1: not looked up)
	id   string // its id in the source
}

// locate resolves dead-letter ids (Refs or bare ids) to the dead letters
// they name. A bare id is looked up in every source, and one found in
// several is an error wrapping ErrAmbiguousID; with withPartition, a dead
// letter in a shared source is read to learn its partition. Dead letters
// found nowhere are left out.
func (in *Inspector) locate(ctx context.Context, op string, refs []string, withPartition bool) ([]deadTarget, error) {
	srcs := in.deadSources()
	targets := make([]deadTarget, 0, len(refs))
	for _, ref := range refs {
		pos, err := in.parsePosition(ref, false)
		if err != nil {
			return nil, fmt.Errorf("completion: %s: %w", op, err)
		}
		id := pos.id.String() // "ms" alone names ms-0
		if pos.part >= 0 && !in.sharedDead {
			targets = append(targets, deadTarget{src: pos.part, part: pos.part, id: id})
			continue
		}
		if len(srcs) == 1 && !withPartition {
			targets = append(targets, deadTarget{src: 0, part: -1, id: id})
			continue
		}
		// Look it up: in the shared source, or in every partition's.
		found := make([]*redis.XMessage, len(srcs))
		err = parallel(ctx, len(srcs), func(ctx context.Context, j int) error {
			msgs, err := in.client.XRangeN(ctx, srcs[j].key, id, id, 1).Result()
			if err != nil {
				return fmt.Errorf("completion: %s: look for dead letter %s in %q: %w", op, id, srcs[j].key, err)
			}
			if len(msgs) > 0 {
				found[j] = &msgs[0]
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		var hits []deadTarget
		for j, m := range found {
			if m != nil {
				hits = append(hits, deadTarget{src: j, part: in.deadLetterPartition(srcs[j], parseDeadLetter(*m)), id: id})
			}
		}
		switch len(hits) {
		case 0:
			continue
		case 1:
			targets = append(targets, hits[0])
			continue
		}
		names := make([]string, len(hits))
		parts := make([]string, len(hits))
		for i, h := range hits {
			names[i] = strconv.Itoa(h.part) + "/" + id
			parts[i] = strconv.Itoa(h.part)
		}
		return nil, fmt.Errorf("%w: %s is in the dead-letter streams of partitions %s of stream %q; %s one of %s (nothing was done)",
			ErrAmbiguousID, id, strings.Join(parts, ", "), in.cfg.Stream, op, strings.Join(names, ", "))
	}
	return targets, nil
}

func (in *Inspector) redrivePartitioned(ctx context.Context, refs []string) (int, error) {
	targets, err := in.locate(ctx, "redrive", refs, true)
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, t := range targets {
		ok, err := in.parts[t.part].redriveOne(ctx, t.id)
		if err != nil {
			return moved, err
		}
		if ok {
			moved++
		}
	}
	return moved, nil
}

func (in *Inspector) redriveRangePartitioned(ctx context.Context, start, end string, limit int) (int, error) {
	srcs := in.deadSources()
	starts, err := in.startBounds(start, srcs)
	if err != nil {
		return 0, fmt.Errorf("completion: redrive: %w", err)
	}
	ends, err := in.endBounds(ctx, end, srcs)
	if err != nil {
		return 0, err
	}
	page := int64(redrivePage)
	if limit > 0 {
		page = min(page, int64(limit))
	}
	cur, err := in.newDeadCursor(ctx, srcs, starts, ends, page)
	if err != nil {
		return 0, fmt.Errorf("completion: redrive: %w", err)
	}
	moved, seen := 0, 0
	for limit == 0 || seen < limit {
		m, src, ok, err := cur.next(ctx)
		if err != nil {
			return moved, fmt.Errorf("completion: redrive: %w", err)
		}
		if !ok {
			break
		}
		seen++
		part := srcs[src].part
		if part < 0 { // a shared dead-letter stream: the entry says
			part = in.deadLetterPartition(srcs[src], parseDeadLetter(m))
		}
		ok, err = in.parts[part].redriveOne(ctx, m.ID)
		if err != nil {
			return moved, err
		}
		if ok {
			moved++
		}
	}
	return moved, nil
}

func (in *Inspector) purgePartitioned(ctx context.Context, refs []string) (int, error) {
	targets, err := in.locate(ctx, "purge", refs, false)
	if err != nil {
		return 0, err
	}
	srcs := in.deadSources()
	ids := make([][]string, len(srcs))
	for _, t := range targets {
		ids[t.src] = append(ids[t.src], t.id)
	}
	purged := 0
	for j, l := range ids {
		if len(l) == 0 {
			continue
		}
		n, err := in.client.XDel(ctx, srcs[j].key, l...).Result()
		if err != nil {
			return purged, fmt.Errorf("completion: purge dead letters from %q (%d deleted from other partitions before): %w", srcs[j].key, purged, err)
		}
		purged += int(n)
	}
	return purged, nil
}

func (in *Inspector) purgeAllPartitioned(ctx context.Context) (int, error) {
	srcs := in.deadSources()
	counts := make([]int64, len(srcs))
	err := parallel(ctx, len(srcs), func(ctx context.Context, j int) error {
		n, err := in.client.XTrimMaxLen(ctx, srcs[j].key, 0).Result()
		if err != nil {
			return fmt.Errorf("completion: purge all dead letters of %q: %w", srcs[j].key, err)
		}
		counts[j] = n
		return nil
	})
	purged := 0
	for _, n := range counts {
		purged += int(n)
	}
	return purged, err
}

// ---------------------------------------------------------------------------
// Tail

func (in *Inspector) tailPartitioned(ctx context.Context, from string, fn func(Entry) error) error {
	froms := make([]string, len(in.parts))
	switch from {
	case "", "$":
		err := parallel(ctx, len(in.parts), func(ctx context.Context, i int) error {
			last, err := in.client.XRevRangeN(ctx, in.parts[i].cfg.Stream, "+", "-", 1).Result()
			if err != nil {
				return fmt.Errorf("completion: tail: read the last entry of %q: %w", in.parts[i].cfg.Stream, err)
			}
			froms[i] = "0-0"
			if len(last) > 0 {
				froms[i] = last[0].ID
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	case "0":
		for i := range froms {
			froms[i] = "0-0"
		}
	default:
		pos, err := in.parsePosition(from, false)
		if err != nil {
			return fmt.Errorf("completion: tail: from %w", err)
		}
		for i := range froms {
			// XREAD returns what follows its id: give it the id before
			// the first one wanted.
			first, ok := pos.firstAfter(i, false)
			switch before, hasBefore := first.prev(); {
			case !ok: // nothing follows the largest id
				froms[i] = pos.id.String()
			case hasBefore:
				froms[i] = before.String()
			default:
				froms[i] = "0-0"
			}
		}
	}
	if keys.TopologyOf(in.client) == keys.SingleNode {
		return in.tailOneRead(ctx, froms, fn)
	}
	return in.tailReaders(ctx, froms, fn)
}

// tailOneRead follows every partition with one XREAD over all their keys:
// on a single node, where that is allowed.
func (in *Inspector) tailOneRead(ctx context.Context, froms []string, fn func(Entry) error) error {
	n := len(in.parts)
	streams := make([]string, 2*n)
	for i, p := range in.parts {
		streams[i] = p.cfg.Stream
	}
	for ctx.Err() == nil {
		copy(streams[n:], froms)
		res, err := in.client.XRead(ctx, &redis.XReadArgs{Streams: streams, Count: 100, Block: tailBlock}).Result()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return fmt.Errorf("completion: tail the %d partitions of stream %q: %w", n, in.cfg.Stream, err)
		}
		for _, s := range res {
			i, ok := in.partIndex[s.Stream]
			if !ok {
				continue
			}
			for _, m := range s.Messages {
				e := newEntry(s.Stream, m)
				e.Partition = i
				if err := fn(e); err != nil {
					return err
				}
				froms[i] = m.ID
			}
		}
	}
	return nil
}

// tailReaders follows every partition with a reader of its own (one
// blocking XREAD per partition, as a cluster requires) and hands their
// entries to fn from this goroutine.
func (in *Inspector) tailReaders(ctx context.Context, froms []string, fn func(Entry) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	entries := make(chan Entry)
	errs := make(chan error, len(in.parts))
	var wg sync.WaitGroup
	for i, p := range in.parts {
		wg.Go(func() {
			err := p.Tail(ctx, froms[i], func(e Entry) error {
				e.Partition = i
				select {
				case entries <- e:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var err error
loop:
	for {
		select {
		case e := <-entries:
			if err = fn(e); err != nil {
				break loop
			}
		case err = <-errs:
			break loop
		case <-done: // every reader ended: ctx ended, or a reader failed
			select {
			case err = <-errs:
			default:
			}
			break loop
		}
	}
	cancel()
	<-done
	return err
}
