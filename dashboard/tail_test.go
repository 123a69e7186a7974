package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// sse is an open live tail.
type sse struct {
	res    *http.Response
	sc     *bufio.Scanner
	cancel context.CancelFunc
}

// openTail opens the live tail of stream (with the query's other
// parameters) and returns it with its status.
func openTail(t *testing.T, b *browser, query string, lastEventID string) (*sse, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/tail/events?"+query, nil)
	require.NoError(t, err)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := b.c.Do(req)
	require.NoError(t, err)
	s := &sse{res: res, sc: bufio.NewScanner(res.Body), cancel: cancel}
	t.Cleanup(s.close)
	if res.StatusCode == http.StatusOK {
		for s.sc.Scan() && s.sc.Text() != ": following" { // the stream is open
		}
	}
	return s, res.StatusCode
}

func (s *sse) close() { s.cancel(); _ = s.res.Body.Close() }

// next returns the next event's id, name and data.
func (s *sse) next(t *testing.T) (id, event string, data map[string]string) {
	t.Helper()
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "" && event != "":
			return id, event, data
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &data))
		}
	}
	t.Fatalf("the event stream ended: %v", s.sc.Err())
	return
}

// TestTail: the live tail sends each entry added after it opened, named
// by its Ref, and resumes after the Last-Event-ID of a reconnect.
func TestTail(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		for _, partitions := range []int{1, 3} {
			stream := uniqueStream(t, be.Client)
			in := newInspector(t, be.Client, inspect.Config{Stream: stream, Partitions: partitions})
			h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})
			b := newBrowser(t, h, "/")
			q := "stream=" + url.QueryEscape(stream)
			s, code := openTail(t, b, q, "")
			require.Equal(t, http.StatusOK, code)
			id1, err := in.PublishTest(t.Context(), completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true})
			require.NoError(t, err)
			ref, event, data := s.next(t)
			require.Equal(t, "entry", event)
			assert.True(t, strings.HasSuffix(ref, id1), "%s names %s", ref, id1)
			assert.Equal(t, "op-1", data["op"])
			assert.Equal(t, "success", data["outcome"])
			assert.True(t, strings.HasPrefix(data["href"], "/entry?"), data["href"])
			s.close()

			// A reconnect after ref gets what was added meanwhile.
			id2, err := in.PublishTest(t.Context(), completion.Message{OperationID: "op-2", TaskID: "t-1", Error: "boom"})
			require.NoError(t, err)
			s, code = openTail(t, b, q, ref)
			require.Equal(t, http.StatusOK, code)
			ref2, _, data := s.next(t)
			assert.True(t, strings.HasSuffix(ref2, id2))
			assert.Equal(t, "failure: boom", data["outcome"])
			s.close()
		}
	})
}

// TestTailEndsWithClient: a tail's handler returns when its client goes
// away (its slot among the MaxTails is free again), so no goroutine of it
// is left; over MaxTails, tails are refused.
func TestTailEndsWithClient(t *testing.T) {
	rdb := redistest.SharedClient(t)
	stream := uniqueStream(t, rdb)
	in := newInspector(t, rdb, inspect.Config{Stream: stream})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})
	b := newBrowser(t, h, "/")
	q := "stream=" + url.QueryEscape(stream)
	var open []*sse
	for range dashboard.MaxTails {
		s, code := openTail(t, b, q, "")
		require.Equal(t, http.StatusOK, code)
		open = append(open, s)
	}
	s, code := openTail(t, b, q, "")
	require.Equal(t, http.StatusServiceUnavailable, code, "over MaxTails")
	s.close()
	for _, s := range open {
		s.close()
	}
	// Every handler ends (within about a second of its client leaving):
	// all MaxTails slots come free.
	eventually(t, func() bool {
		var got []*sse
		defer func() {
			for _, s := range got {
				s.close()
			}
		}()
		for range dashboard.MaxTails {
			s, code := openTail(t, b, q, "")
			if code != http.StatusOK {
				return false
			}
			got = append(got, s)
		}
		return true
	}, "tail handlers did not end with their clients")
}
