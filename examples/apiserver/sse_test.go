package main

import (
	"bufio"
	"io"
	"strings"
)

// frame is one Server-Sent Events block.
type frame struct {
	id, event, data, retry, comment string
}

// readFrames calls f with each SSE block read from r until r ends or f
// returns false.
func readFrames(r io.Reader, f func(frame) bool) error {
	var fr frame
	var data []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			fr.data = strings.Join(data, "\n")
			if !f(fr) {
				return nil
			}
			fr, data = frame{}, nil
			continue
		}
		if c, ok := strings.CutPrefix(line, ":"); ok {
			fr.comment = strings.TrimSpace(c)
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			fr.id = value
		case "event":
			fr.event = value
		case "data":
			data = append(data, value)
		case "retry":
			fr.retry = value
		}
	}
	return sc.Err()
}
