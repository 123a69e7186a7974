package inspect

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

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

// compareStreamIDs orders two stream ids as Redis does; text that is not an
// id compares as text.
func compareStreamIDs(a, b string) int {
	x, errA := parseStreamID(a, false)
	y, errB := parseStreamID(b, false)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return x.compare(y)
}

// position is a place in the order of the entries (or dead letters) of all
// partitions: by id, then partition. part is -1 for a bare id, which stands
// for that id in every partition.
type position struct {
	part int
	id   streamID
	full bool // the id had its sequence number
}

// parsePosition parses "PARTITION/ID" or a bare "ID" (see parseStreamID for
// end).
func (in *Inspector) parsePosition(s string, end bool) (position, error) {
	p, idText, qualified := strings.Cut(s, "/")
	pos := position{part: -1}
	n := len(in.parts)
	if qualified {
		i, err := strconv.Atoi(p)
		if err != nil || i < 0 || i >= n || strconv.Itoa(i) != p {
			return position{}, fmt.Errorf("%q: want PARTITION/ID with a partition from 0 to %d (the stream has %d partitions), e.g. %d/1700000000000-0",
				s, n-1, n, n-1)
		}
		pos.part = i
	} else {
		idText = s
	}
	id, err := parseStreamID(idText, end)
	if err != nil {
		if n == 1 {
			return position{}, fmt.Errorf("%q is not an id: want ms-seq, e.g. 1700000000000-0", s)
		}
		return position{}, fmt.Errorf("%q is not an id: want ID or PARTITION/ID, e.g. 1700000000000-0 or %d/1700000000000-0", s, n-1)
	}
	pos.id = id
	pos.full = strings.Contains(idText, "-")
	if n == 1 {
		pos.part = -1 // "0/ID" and "ID" are the same entry
	}
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

// startBounds returns each of n streams' first id (for XRANGE or XPENDING)
// of the range that start opens: "" or "-" for the oldest, an id or a Ref,
// inclusive, or either prefixed with "(", exclusive. partOf maps a Ref's
// partition to the stream index. An empty bound means nothing.
func (in *Inspector) startBounds(start string, n int, partOf func(int) int) ([]string, error) {
	out := make([]string, n)
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
		pos.part = partOf(pos.part)
	}
	for j := range out {
		if id, ok := pos.firstAfter(j, inclusive); ok {
			out[j] = id.String()
		}
	}
	return out, nil
}

// ref names the entry id of partition part: id itself when the stream is
// not partitioned, "PARTITION/ID" otherwise.
func (in *Inspector) ref(part int, id string) string {
	if !in.partitioned() {
		return id
	}
	return strconv.Itoa(part) + "/" + id
}
