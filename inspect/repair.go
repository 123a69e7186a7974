package inspect

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/scripts"
	"github.com/streamrelay/completion/internal/wire"
)

// redrivePage is how many dead letters the range redrives read at a time.
const redrivePage = 100

// Redrive moves the dead letters refs names back to the stream, in the order
// given, and returns how many it moved. A ref is a full id ("ms-seq"), or of
// a partitioned stream "PARTITION/ID"; a bare id there is looked for in every
// partition's dead-letter stream, and one found in several is refused with
// [ErrAmbiguousID] before anything is moved. An id without its sequence
// number ("ms") is refused: it would name every dead letter of that
// millisecond, and Redis's XDEL only the first. A dead letter that is not
// (or no longer) there is skipped, so redriving twice moves nothing the
// second time.
//
// Each moved entry gets a new id at the end of the stream (of a partitioned
// stream, of the partition it came from), with the original entry's fields
// in their order and with their names, and is delivered to every group as a
// new entry. The stream is not trimmed. The entries are always written to
// the inspector's stream, whichever stream their dl_stream field names.
//
// When the dead-letter stream and the stream live on one node (a
// *redis.Client; in a cluster, keys in one slot, as the default
// completion.DeadLetterStreamFor is), each dead letter is moved by one Lua
// script that checks it is still there, adds it to the stream and deletes
// it, so that every dead letter is moved exactly once even when several
// operators redrive at the same time. Otherwise the move is XRANGE, XADD,
// XDEL: a crash between XADD and XDEL, or another redrive of the same entry
// at the same moment, can add it to the stream twice (never lose it);
// consumers tolerate duplicates anyway.
//
// Redrive stops at the first error, also at a dead letter that cannot be
// redriven ([ErrNotRedrivable]), and returns the number moved so far with
// it.
func (in *Inspector) Redrive(ctx context.Context, refs ...string) (int, error) {
	targets, err := in.locate(ctx, "redrive", refs)
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, t := range targets {
		ok, err := in.redriveOne(ctx, t)
		if err != nil {
			return moved, err
		}
		if ok {
			moved++
		}
	}
	return moved, nil
}

// RedriveRange redrives (see [Inspector.Redrive]) the dead letters from
// start to end, both included, oldest first, at most limit of them (0: no
// limit). start and end are ids, or of a partitioned stream Refs
// "PARTITION/ID" (positions in the order of [Inspector.DeadLetters]); an id
// without its sequence number covers that whole millisecond; "-" and "+"
// mean the oldest and the newest, and "+" is read when RedriveRange starts,
// so that dead letters added meanwhile (perhaps the same entries, failing
// again) are left alone. It returns how many it moved.
//
// Dead letters that cannot be redriven are skipped: the rest are moved, and
// then the error wraps [ErrNotRedrivable] and counts those left.
func (in *Inspector) RedriveRange(ctx context.Context, start, end string, limit int) (int, error) {
	return in.redriveWhere(ctx, start, end, limit, "")
}

// RedriveAll redrives every dead letter present when it starts (see
// [Inspector.RedriveRange]) and returns how many it moved.
func (in *Inspector) RedriveAll(ctx context.Context) (int, error) {
	return in.redriveWhere(ctx, "-", "+", 0, "")
}

// RedriveReason redrives every dead letter of the given reason present when
// it starts (see [Inspector.RedriveRange]) and returns how many it moved.
func (in *Inspector) RedriveReason(ctx context.Context, reason string) (int, error) {
	if reason == "" {
		return 0, errors.New("inspect: redrive by reason: the reason is empty")
	}
	return in.redriveWhere(ctx, "-", "+", 0, reason)
}

func (in *Inspector) redriveWhere(ctx context.Context, start, end string, limit int, reason string) (int, error) {
	if limit < 0 {
		return 0, fmt.Errorf("inspect: redrive: limit is %d; it must be positive (0 means no limit)", limit)
	}
	if start == "" {
		start = "-"
	}
	starts, err := in.startBounds(start, len(in.dead), in.sourceOf)
	if err != nil {
		return 0, fmt.Errorf("inspect: redrive: %w", err)
	}
	ends, err := in.endBounds(ctx, end)
	if err != nil {
		return 0, err
	}
	page := int64(redrivePage)
	if limit > 0 && reason == "" {
		page = min(page, int64(limit))
	}
	cur, err := in.newDeadCursor(ctx, starts, ends, page)
	if err != nil {
		return 0, fmt.Errorf("inspect: redrive: %w", err)
	}
	moved, seen := 0, 0
	var skipped []string
	for limit == 0 || seen < limit {
		m, src, ok, err := cur.next(ctx)
		if err != nil {
			return moved, fmt.Errorf("inspect: redrive: %w", err)
		}
		if !ok {
			break
		}
		dl := in.deadLetterOf(src, m)
		if reason != "" && dl.Reason != reason {
			continue
		}
		seen++
		ok, err = in.redriveOne(ctx, deadTarget{src: src, part: dl.Partition, id: m.ID})
		switch {
		case errors.Is(err, ErrNotRedrivable):
			skipped = append(skipped, dl.Ref)
		case err != nil:
			return moved, err
		case ok:
			moved++
		}
	}
	if len(skipped) > 0 {
		return moved, fmt.Errorf("%w: left %d dead %s that hold no fields to put back (oversize entries hold only an excerpt), e.g. %s; purge them when done",
			ErrNotRedrivable, len(skipped), plural(len(skipped), "letter", "letters"), skipped[0])
	}
	return moved, nil
}

// endBounds returns each source's last id (for XRANGE) of the range that end
// closes, inclusive: "" or "+" for each source's newest dead letter now, an
// id, or a Ref. An empty bound means nothing.
func (in *Inspector) endBounds(ctx context.Context, end string) ([]string, error) {
	out := make([]string, len(in.dead))
	if end == "" || end == "+" {
		err := fanOut(ctx, len(in.dead), func(ctx context.Context, j int) error {
			last, err := in.client.XRevRangeN(ctx, in.dead[j].key, "+", "-", 1).Result()
			if err != nil {
				return fmt.Errorf("inspect: redrive: read the newest dead letter of %q: %w", in.dead[j].key, err)
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
		return nil, fmt.Errorf("inspect: redrive: end %w", err)
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

// Purge deletes the dead letters refs names (as for [Inspector.Redrive]:
// full ids, or of a partitioned stream "PARTITION/ID" or a bare id found in
// one partition) and returns how many there were. Unknown ids are skipped.
func (in *Inspector) Purge(ctx context.Context, refs ...string) (int, error) {
	if len(refs) == 0 {
		return 0, nil
	}
	targets, err := in.locate(ctx, "purge", refs)
	if err != nil {
		return 0, err
	}
	ids := make([][]string, len(in.dead))
	for _, t := range targets {
		ids[t.src] = append(ids[t.src], t.id)
	}
	purged := 0
	for j, l := range ids {
		if len(l) == 0 {
			continue
		}
		n, err := in.client.XDel(ctx, in.dead[j].key, l...).Result()
		if err != nil {
			return purged, fmt.Errorf("inspect: purge dead letters from %q (%d deleted before): %w", in.dead[j].key, purged, err)
		}
		purged += int(n)
	}
	return purged, nil
}

// PurgeAll deletes every dead letter, also those added while it runs, and
// returns how many it deleted. It empties each dead-letter stream with
// XTRIM MAXLEN 0 rather than deleting the key, so consumer groups someone
// may have created on it survive.
func (in *Inspector) PurgeAll(ctx context.Context) (int, error) {
	counts := make([]int64, len(in.dead))
	err := fanOut(ctx, len(in.dead), func(ctx context.Context, j int) error {
		n, err := in.client.XTrimMaxLen(ctx, in.dead[j].key, 0).Result()
		if err != nil {
			return fmt.Errorf("inspect: purge all dead letters of %q: %w", in.dead[j].key, err)
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

// deadTarget is a dead letter a redrive or purge acts on.
type deadTarget struct {
	src  int    // its source
	part int    // its partition
	id   string // its full id in the source
}

// locate resolves refs to the dead letters they name; see
// [Inspector.Redrive] for the forms accepted. Dead letters found nowhere are
// left out.
func (in *Inspector) locate(ctx context.Context, op string, refs []string) ([]deadTarget, error) {
	targets := make([]deadTarget, 0, len(refs))
	for _, ref := range refs {
		pos, err := in.parsePosition(ref, false)
		if err != nil {
			return nil, fmt.Errorf("inspect: %s: %w", op, err)
		}
		if !pos.full {
			return nil, in.notFullID(ctx, op, ref, pos)
		}
		id := pos.id.String()
		switch {
		case !in.partitioned():
			targets = append(targets, deadTarget{src: 0, part: 0, id: id})
			continue
		case pos.part >= 0 && len(in.dead) > 1:
			targets = append(targets, deadTarget{src: pos.part, part: pos.part, id: id})
			continue
		}
		// Look it up: in the shared source (to learn its partition), or in
		// every partition's.
		hits, err := in.find(ctx, op, id, id)
		if err != nil {
			return nil, err
		}
		if pos.part >= 0 { // a Ref into the shared source
			for _, h := range hits {
				if h.part == pos.part {
					targets = append(targets, h)
				}
			}
			continue
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
			names[i] = in.ref(h.part, id)
			parts[i] = strconv.Itoa(h.part)
		}
		return nil, fmt.Errorf("%w: %s is in the dead-letter streams of partitions %s of stream %q; %s one of %s (nothing was done)",
			ErrAmbiguousID, id, strings.Join(parts, ", "), in.cfg.Stream, op, strings.Join(names, ", "))
	}
	return targets, nil
}

// find returns the dead letters with ids from start to end in every source.
func (in *Inspector) find(ctx context.Context, op, start, end string) ([]deadTarget, error) {
	found := make([][]redis.XMessage, len(in.dead))
	err := fanOut(ctx, len(in.dead), func(ctx context.Context, j int) error {
		msgs, err := in.client.XRangeN(ctx, in.dead[j].key, start, end, 100).Result()
		if err != nil {
			return fmt.Errorf("inspect: %s: look for dead letter %s in %q: %w", op, start, in.dead[j].key, err)
		}
		found[j] = msgs
		return nil
	})
	if err != nil {
		return nil, err
	}
	var hits []deadTarget
	for j, msgs := range found {
		for _, m := range msgs {
			hits = append(hits, deadTarget{src: j, part: in.deadLetterPartition(j, parseDeadLetter(m)), id: m.ID})
		}
	}
	return hits, nil
}

// notFullID is the error for an id without its sequence number, naming the
// dead letters of that millisecond.
func (in *Inspector) notFullID(ctx context.Context, op, ref string, pos position) error {
	ms := strconv.FormatUint(pos.id.ms, 10)
	hits, err := in.find(ctx, op, ms, ms)
	if err != nil {
		return err
	}
	var names []string
	for _, h := range hits {
		if pos.part < 0 || h.part == pos.part {
			names = append(names, in.ref(h.part, h.id))
		}
	}
	what := "there is none in that millisecond"
	if len(names) > 0 {
		what = "that millisecond holds " + strings.Join(names, ", ")
	}
	return fmt.Errorf("inspect: %s: %q is not a full dead-letter id: give ms-seq, e.g. %s-0 (%s; nothing was done)", op, ref, ms, what)
}

// redriveOne moves the dead letter t back to its partition's stream.
func (in *Inspector) redriveOne(ctx context.Context, t deadTarget) (bool, error) {
	dead, stream := in.dead[t.src].key, in.parts[t.part]
	wrap := func(err error) error {
		return fmt.Errorf("inspect: redrive dead letter %s from %q to %q: %w", t.id, dead, stream, err)
	}
	if in.topo.SameNode(dead, stream) {
		err := scripts.Redrive.Run(ctx, in.client, []string{dead, stream}, t.id, wire.MaxEntryFields).Err()
		switch {
		case errors.Is(err, redis.Nil):
			return false, nil
		case redis.HasErrorPrefix(err, "NOTREDRIVABLE"):
			return false, wrap(fmt.Errorf("%w: %s", ErrNotRedrivable, strings.TrimPrefix(err.Error(), "NOTREDRIVABLE ")))
		case err != nil:
			return false, wrap(err)
		}
		return true, nil
	}
	values, found, err := in.originalFields(ctx, dead, t.id)
	switch {
	case err != nil:
		return false, wrap(err)
	case !found:
		return false, nil
	case len(values) == 0:
		return false, wrap(fmt.Errorf("%w: it holds no original fields (an oversize entry's holds only an excerpt)", ErrNotRedrivable))
	}
	if err := in.client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Err(); err != nil {
		return false, wrap(err)
	}
	if err := in.client.XDel(ctx, dead, t.id).Err(); err != nil {
		return true, wrap(fmt.Errorf("added to the stream, but not deleted from the dead-letter stream (redriving it again adds it twice): %w", err))
	}
	return true, nil
}

// originalFields reads the original fields of dead letter id, in their
// order and with their names, as the redrive script does.
func (in *Inspector) originalFields(ctx context.Context, dead, id string) ([]any, bool, error) {
	res, err := in.client.Do(ctx, "XRANGE", dead, id, id).Slice()
	if err != nil {
		return nil, false, err
	}
	if len(res) == 0 {
		return nil, false, nil
	}
	entry, _ := res[0].([]any)
	if len(entry) != 2 {
		return nil, false, fmt.Errorf("unexpected XRANGE reply %v", res[0])
	}
	flat, _ := entry[1].([]any)
	var values []any
	for i := 0; i+1 < len(flat); i += 2 {
		name, _ := flat[i].(string)
		if orig, ok := originalField(name); ok {
			values = append(values, orig, flat[i+1])
		}
	}
	if len(values)/2 > wire.MaxEntryFields {
		return nil, true, fmt.Errorf("%w: it holds %d fields, over the limit of %d", ErrNotRedrivable, len(values)/2, wire.MaxEntryFields)
	}
	return values, true, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
