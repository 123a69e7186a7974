// Package ssetest reads Server-Sent Events the way a browser's EventSource
// does, for the tests of the SSE handler and of the examples that serve it.
// It is imported by tests only.
package ssetest

import (
	"bufio"
	"io"
	"strings"
)

// Frame is one Server-Sent Events block: its fields (data lines joined
// with "\n"), or a comment.
type Frame struct {
	ID, Event, Data, Retry, Comment string
}

// Read calls f with each block read from r until r ends or f returns
// false.
func Read(r io.Reader, f func(Frame) bool) error {
	var fr Frame
	var data []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			fr.Data = strings.Join(data, "\n")
			if !f(fr) {
				return nil
			}
			fr, data = Frame{}, nil
			continue
		}
		if c, ok := strings.CutPrefix(line, ":"); ok {
			fr.Comment = strings.TrimSpace(c)
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			fr.ID = value
		case "event":
			fr.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			fr.Retry = value
		}
	}
	return sc.Err()
}

// ReadAll returns every block read from r until it ends.
func ReadAll(r io.Reader) ([]Frame, error) {
	var out []Frame
	err := Read(r, func(f Frame) bool {
		out = append(out, f)
		return true
	})
	return out, err
}
