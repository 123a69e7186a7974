package wire

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner validates JSON text without recursion: the kind of each open
// container is one bit in stack.
type scanner struct {
	data  []byte
	pos   int
	depth int
	stack [(MaxDepth + 63) / 64]uint64 // bit d set: level d+1 is an object
	field string                       // known field being scanned, for errors
	sawWS bool                         // skipWS skipped something
}

func (s *scanner) skipWS() {
	if s.pos < len(s.data) && s.data[s.pos] > ' ' {
		return // the common case: no whitespace
	}
	start := s.pos
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			s.sawWS = s.sawWS || s.pos != start
			return
		}
	}
	s.sawWS = s.sawWS || s.pos != start
}

// end checks that only whitespace follows the value just scanned.
func (s *scanner) end() error {
	s.skipWS()
	if s.pos != len(s.data) {
		return s.errorf("trailing data after the JSON value")
	}
	return nil
}

func (s *scanner) push(object bool) error {
	if s.depth >= MaxDepth {
		return s.errorf("nested deeper than %d levels", MaxDepth)
	}
	word, bit := s.depth>>6, uint(s.depth&63)
	if object {
		s.stack[word] |= 1 << bit
	} else {
		s.stack[word] &^= 1 << bit
	}
	s.depth++
	return nil
}

func (s *scanner) inObject() bool {
	d := s.depth - 1
	return s.stack[d>>6]>>uint(d&63)&1 == 1
}

// skipValue scans one JSON value, with leading whitespace, starting at s.pos.
func (s *scanner) skipValue() error {
	base := s.depth
	for {
		done, err := s.openValue()
		if err != nil {
			return err
		}
		if !done {
			continue // a container was opened; scan its first element
		}
		// A value is complete: close containers as far as possible and move
		// on to the next element.
		for {
			if s.depth == base {
				return nil
			}
			s.skipWS()
			if s.pos >= len(s.data) {
				return s.errEOF()
			}
			c := s.data[s.pos]
			if s.inObject() {
				if c == '}' {
					s.pos++
					s.depth--
					continue
				}
				if c != ',' {
					return s.errUnexpected("',' or '}' after an object member")
				}
				s.pos++
				if err := s.memberKey(); err != nil {
					return err
				}
			} else {
				if c == ']' {
					s.pos++
					s.depth--
					continue
				}
				if c != ',' {
					return s.errUnexpected("',' or ']' after an array element")
				}
				s.pos++
			}
			break
		}
	}
}

// openValue scans the start of a value. For a scalar or an empty container
// it consumes the whole value and reports done. For a non-empty container it
// consumes the opening bracket (and for an object the first key and its
// colon) and reports not done.
func (s *scanner) openValue() (done bool, err error) {
	s.skipWS()
	if s.pos >= len(s.data) {
		return false, s.errEOF()
	}
	switch c := s.data[s.pos]; c {
	case '{', '[':
		if err := s.push(c == '{'); err != nil {
			return false, err
		}
		s.pos++
		s.skipWS()
		if s.pos < len(s.data) && (s.data[s.pos] == '}' && c == '{' || s.data[s.pos] == ']' && c == '[') {
			s.pos++
			s.depth--
			return true, nil
		}
		if c == '{' {
			return false, s.memberKey()
		}
		return false, nil
	case '"':
		_, err := s.scanString()
		return true, err
	case 't':
		return true, s.literal("true")
	case 'f':
		return true, s.literal("false")
	case 'n':
		return true, s.literal("null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return true, s.scanNumber()
		}
		return false, s.errUnexpected("a JSON value")
	}
}

// memberKey scans an object key and the colon after it.
func (s *scanner) memberKey() error {
	s.skipWS()
	if s.pos >= len(s.data) {
		return s.errEOF()
	}
	if s.data[s.pos] != '"' {
		return s.errUnexpected("a string key")
	}
	if _, err := s.scanString(); err != nil {
		return err
	}
	s.skipWS()
	if s.pos >= len(s.data) {
		return s.errEOF()
	}
	if s.data[s.pos] != ':' {
		return s.errUnexpected("':' after an object key")
	}
	s.pos++
	return nil
}

func (s *scanner) literal(word string) error {
	rest := s.data[s.pos:]
	if len(rest) >= len(word) && string(rest[:len(word)]) == word {
		s.pos += len(word)
		return nil
	}
	if len(rest) < len(word) && string(rest) == word[:len(rest)] {
		return s.errEOFAt(len(s.data))
	}
	return s.errorf("invalid literal, want %s", word)
}

// scanNumber scans a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// A number too large for a double (1e400, an integer of 400 digits) is an
// error, as in orjson: a Python reader could not decode the message.
func (s *scanner) scanNumber() error {
	d, i := s.data, s.pos
	start := i
	if d[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		return i - j
	}
	intDigits, exp := 1, false
	switch {
	case i >= len(d):
		return s.errEOFAt(i)
	case d[i] == '0':
		i++
	case '1' <= d[i] && d[i] <= '9':
		intDigits = digits()
	default:
		s.pos = i
		return s.errorf("invalid number: want a digit")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			if i >= len(d) {
				return s.errEOFAt(i)
			}
			s.pos = i
			return s.errorf("invalid number: want a digit after '.'")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		exp = true
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			if i >= len(d) {
				return s.errEOFAt(i)
			}
			s.pos = i
			return s.errorf("invalid number: want a digit in the exponent")
		}
	}
	// Only an exponent or more than 308 integer digits can overflow.
	if exp || intDigits > 308 {
		if f, _ := strconv.ParseFloat(string(d[start:i]), 64); math.IsInf(f, 0) {
			s.pos = start
			return s.errorf("number %s is out of the range of a double (the Python reader rejects it)", quoteForError(d[start:i]))
		}
	}
	s.pos = i
	return nil
}

// scanString scans a string literal starting at the opening quote at s.pos,
// checking escapes, UTF-8 and surrogate pairs. It reports whether the string
// contains escape sequences.
func (s *scanner) scanString() (escaped bool, err error) {
	d := s.data
	i := s.pos + 1
	for {
		for i < len(d) && plainASCII[d[i]] {
			i++
		}
		if i >= len(d) {
			return escaped, s.errEOFAt(i)
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return escaped, nil
		case c == '\\':
			escaped = true
			n, err := s.checkEscape(i)
			if err != nil {
				return escaped, err
			}
			i += n
		case c < 0x20:
			s.pos = i
			return escaped, s.errorf("control character 0x%02x in a string (must be escaped)", c)
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				s.pos = i
				return escaped, s.errorf("invalid UTF-8 byte 0x%02x in a string", c)
			}
			i += size
		}
	}
}

// checkEscape checks the escape sequence at d[i] == '\\' and returns its
// length.
func (s *scanner) checkEscape(i int) (int, error) {
	d := s.data
	if i+1 >= len(d) {
		return 0, s.errEOFAt(len(d))
	}
	switch d[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
	default:
		s.pos = i
		return 0, s.errorf("invalid escape sequence \\%s", quoteByte(d[i+1]))
	}
	r, err := s.hexEscape(i)
	if err != nil {
		return 0, err
	}
	if !utf16.IsSurrogate(r) {
		return 6, nil
	}
	if r >= 0xdc00 {
		s.pos = i
		return 0, s.errorf("lone low surrogate \\u%04x in a string", r)
	}
	j := i + 6
	if j+1 < len(d) && d[j] == '\\' && d[j+1] == 'u' {
		r2, err := s.hexEscape(j)
		if err != nil {
			return 0, err
		}
		if 0xdc00 <= r2 && r2 <= 0xdfff {
			return 12, nil
		}
	} else if j >= len(d) || j+1 >= len(d) && d[j] == '\\' {
		return 0, s.errEOFAt(len(d))
	}
	s.pos = i
	return 0, s.errorf("lone high surrogate \\u%04x in a string", r)
}

// hexEscape decodes the four hex digits of the \u escape at d[i].
func (s *scanner) hexEscape(i int) (rune, error) {
	d := s.data
	var r rune
	for j := i + 2; j < i+6; j++ {
		if j >= len(d) {
			return 0, s.errEOFAt(len(d))
		}
		v := hexValue(d[j])
		if v < 0 {
			s.pos = j
			return 0, s.errorf("invalid hex digit %s in a \\u escape", quoteByte(d[j]))
		}
		r = r<<4 | v
	}
	return r, nil
}

func hexValue(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// decodeEscape decodes the escape sequence at the start of lit, which the
// scanner has already checked, and returns the rune and the sequence length.
func decodeEscape(lit []byte) (rune, int) {
	switch lit[1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hex4(lit[2:6])
		if utf16.IsSurrogate(r) {
			return utf16.DecodeRune(r, hex4(lit[8:12])), 12
		}
		return r, 6
	}
	return rune(lit[1]), 2 // '"', '\\', '/'
}

func hex4(b []byte) rune {
	return hexValue(b[0])<<12 | hexValue(b[1])<<8 | hexValue(b[2])<<4 | hexValue(b[3])
}

// appendUnescaped appends the unescaped text of the checked string content
// lit to dst.
func appendUnescaped(dst, lit []byte) []byte {
	for {
		i := bytes.IndexByte(lit, '\\')
		if i < 0 {
			return append(dst, lit...)
		}
		dst = append(dst, lit[:i]...)
		r, n := decodeEscape(lit[i:])
		dst = utf8.AppendRune(dst, r)
		lit = lit[i+n:]
	}
}
