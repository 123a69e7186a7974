package taskstream

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxTaskIDBytes is the longest task id accepted, in bytes (the consumer's
// default MaxIDBytes).
const MaxTaskIDBytes = 512

// checkTaskID reports why id cannot name a task stream, if it cannot.
func checkTaskID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidTaskID)
	case len(id) > MaxTaskIDBytes:
		return fmt.Errorf("%w: %d bytes, over MaxTaskIDBytes (%d)", ErrInvalidTaskID, len(id), MaxTaskIDBytes)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidTaskID)
	}
	return nil
}

// streamID is a parsed stream entry id.
type streamID struct{ ms, seq uint64 }

// parseID parses "<ms>-<seq>" (both unsigned decimal) or "0"; "" is 0-0.
func parseID(s string) (streamID, error) {
	if s == "" || s == "0" {
		return streamID{}, nil
	}
	msPart, seqPart, ok := strings.Cut(s, "-")
	if ok && len(s) <= 41 {
		ms, err1 := strconv.ParseUint(msPart, 10, 64)
		seq, err2 := strconv.ParseUint(seqPart, 10, 64)
		if err1 == nil && err2 == nil {
			return streamID{ms, seq}, nil
		}
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return streamID{}, fmt.Errorf("%w: %q: want <milliseconds>-<sequence>", ErrInvalidID, s)
}

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq
}

func (a streamID) isZero() bool { return a == streamID{} }

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}
