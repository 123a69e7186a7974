package wire

import (
	"bytes"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// plainASCII[c] is true for the ASCII bytes that stand for themselves in a
// JSON string, both when reading and when writing: everything from 0x20 to
// 0x7f except '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// The parts of the wire form around the values.
const (
	wireOperationID = `{"operation_id":`
	wireTaskID      = `,"task_id":`
	wireSuccess     = `,"success":`
	wireResult      = `,"result":`
	wireError       = `,"error":`
	wireEnd         = `}`
)

// Append appends the wire form of m, which has passed Validate; compact
// (from Validate) tells whether Result needs whitespace removed.
func Append(dst []byte, m *Message, compact bool) []byte {
	dst = append(dst, wireOperationID...)
	dst = AppendString(dst, m.OperationID)
	dst = append(dst, wireTaskID...)
	dst = AppendString(dst, m.TaskID)
	dst = append(dst, wireSuccess...)
	if m.Success {
		dst = append(dst, "true"...)
	} else {
		dst = append(dst, "false"...)
	}
	dst = append(dst, wireResult...)
	if len(m.Result) == 0 {
		dst = append(dst, "null"...)
	} else if compact {
		dst = appendCompact(dst, m.Result)
	} else {
		dst = append(dst, m.Result...)
	}
	dst = append(dst, wireError...)
	if m.Error == "" {
		dst = append(dst, "null"...)
	} else {
		dst = AppendString(dst, m.Error)
	}
	return append(dst, wireEnd...)
}

// EncodedLenMax returns an upper bound of the length of m's wire form (exact
// unless Result contains insignificant whitespace).
func EncodedLenMax(m *Message) int {
	n := len(wireOperationID) + len(wireTaskID) + len(wireSuccess) + len(wireResult) + len(wireError) + len(wireEnd)
	n += QuotedLen(m.OperationID) + QuotedLen(m.TaskID)
	if m.Success {
		n += len("true")
	} else {
		n += len("false")
	}
	if len(m.Result) == 0 {
		n += len("null")
	} else {
		n += len(m.Result)
	}
	if m.Error == "" {
		n += len("null")
	} else {
		n += QuotedLen(m.Error)
	}
	return n
}

// AppendString appends s as a JSON string literal, escaped as serde_json
// (and so pydantic) escapes it; invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainASCII[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// QuotedLen returns len(AppendString(nil, s)).
func QuotedLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n++
			case c < 0x20:
				n += 5
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len("\uFFFD") - 1
		}
		i += size
	}
	return n
}

// appendCompact appends the valid JSON src without insignificant
// whitespace, keeping everything else (key order, escapes) as it is.
func appendCompact(dst, src []byte) []byte {
	start := 0
	inString := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// unescapeLineSeparators replaces the escapes \u2028 and \u2029 in the
// strings of the valid JSON b with the raw characters, in place.
func unescapeLineSeparators(b []byte) []byte {
	if !bytes.Contains(b, []byte(`\u202`)) {
		return b
	}
	out := b[:0]
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			out = append(out, c)
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+5 < len(b) && b[i+1] == 'u' && b[i+2] == '2' && b[i+3] == '0' && b[i+4] == '2' && (b[i+5] == '8' || b[i+5] == '9') {
				// The raw form (3 bytes) is shorter than the escape (6
				// bytes), so writing in place never overtakes reading.
				out = utf8.AppendRune(out, rune(0x2028+int(b[i+5]-'8')))
				i += 5
				continue
			}
			out = append(out, c, b[i+1])
			i++
			continue
		}
		out = append(out, c)
	}
	return out
}
