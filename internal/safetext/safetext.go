// Package safetext makes untrusted text (ids, error texts, field values
// that came from a stream entry) safe to show: in a log line, a terminal
// table, one line of anything. Control characters, line and paragraph
// separators, the Unicode bidirectional overrides and invalid UTF-8 are
// written as escapes, so such text can neither forge a line, move the
// cursor, retitle a terminal, nor reorder what is shown around it.
package safetext

import (
	"strconv"
	"unicode/utf8"
)

// Escape returns s with every character that could act on a terminal or
// split a line escaped: C0 and C1 control characters and DEL as \n, \t or
// \u00XX, U+2028 and U+2029 and the bidirectional embedding, override and
// isolate characters as \uXXXX, and each invalid UTF-8 byte as \xXX. Other
// text, backslashes included, is kept as is.
func Escape(s string) string {
	if clean(s) {
		return s
	}
	return string(appendEscaped(make([]byte, 0, len(s)+16), s, -1))
}

// Cap returns Escape(s) cut to at most n bytes (of the escaped text), marking a cut with
// "…(N bytes)", N being the length of s.
func Cap(s string, n int) string {
	if len(s) <= n && clean(s) {
		return s
	}
	out := appendEscaped(make([]byte, 0, min(len(s), n)+16), s, n)
	if len(out) > 0 && out[len(out)-1] == 0 { // the cut mark
		out = out[:len(out)-1]
		return string(out) + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return string(out)
}

// clean reports whether s needs no escaping.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendEscaped appends the escaped s to dst; with n >= 0 it stops once the
// output holds n bytes and appends a 0 byte to say so.
func appendEscaped(dst []byte, s string, n int) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		if n >= 0 && len(dst) >= n {
			return append(dst, 0)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, '\\', 'x', hex[s[i]>>4], hex[s[i]&15])
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case unsafe(r):
			dst = append(dst, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

// unsafe reports whether r must not be shown raw.
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x2028, r == 0x2029: // line, paragraph separator
		return true
	case 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069: // bidi embeddings, overrides, isolates
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c: // bidi marks
		return true
	}
	return false
}
