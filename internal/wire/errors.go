package wire

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%w: field %q: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}

// errorf reports a syntax error at s.pos, naming the field being scanned.
func (s *scanner) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s.field != "" {
		return fmt.Errorf("%w: field %q: invalid JSON at offset %d: %s", ErrMalformed, s.field, s.pos, msg)
	}
	return fmt.Errorf("%w: invalid JSON at offset %d: %s", ErrMalformed, s.pos, msg)
}

func (s *scanner) errEOF() error { return s.errEOFAt(len(s.data)) }

func (s *scanner) errEOFAt(pos int) error {
	s.pos = pos
	return s.errorf("unexpected end of input")
}

func (s *scanner) errUnexpected(want string) error {
	return s.errorf("unexpected %s, want %s", describeByte(s.data[s.pos]), want)
}

func describeByte(c byte) string {
	if 0x20 < c && c < 0x7f {
		return "character " + strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func quoteByte(c byte) string {
	if 0x20 < c && c < 0x7f {
		return string(rune(c))
	}
	return fmt.Sprintf("<0x%02x>", c)
}

// quoteForError returns raw input for an error message, shortened.
func quoteForError(raw []byte) string {
	const max = 40
	if len(raw) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(raw[cut]) {
			cut--
		}
		return string(raw[:cut]) + "..."
	}
	return string(raw)
}

func kindName(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
