package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
)

// served is a running "completion serve".
type served struct {
	url    string // as printed
	stderr *syncBuffer
	code   chan int
	stop   context.CancelFunc
}

var servedURL = regexp.MustCompile(`at (http://127\.0\.0\.1:[0-9]+/) `)

// startServe runs the program with args (serve among them) until the test
// ends, and returns once it has printed its URL.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &served{stderr: &syncBuffer{}, code: make(chan int, 1), stop: cancel}
	go func() {
		s.code <- run(ctx, args, pw, s.stderr)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		<-s.code
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err, "stderr: %s", s.stderr)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := servedURL.FindStringSubmatch(line)
	require.NotNil(t, m, "the URL is printed: %q", line)
	s.url = m[1]
	return s
}

func TestServe(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := newScenario(t, b)
		for _, write := range []bool{false, true} {
			args := []string{"-addr", b.addr, "-stream", s.stream, "serve", "-listen", "127.0.0.1:0"}
			if write {
				args = append(args, "-write")
			}
			srv := startServe(t, args...)
			res, err := http.Get(srv.url)
			require.NoError(t, err)
			page, _ := io.ReadAll(res.Body)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode, string(page))
			assert.Contains(t, string(page), s.stream)
			assert.Equal(t, write, strings.Contains(string(page), "actions enabled"), "write %v", write)

			res, err = http.Get(srv.url + "dead?stream=" + url.QueryEscape(s.stream))
			require.NoError(t, err)
			page, _ = io.ReadAll(res.Body)
			res.Body.Close()
			assert.Equal(t, write, strings.Contains(string(page), "csrf_token"), "write %v: the actions form", write)

			res, err = http.PostForm(srv.url+"actions/purge", url.Values{"stream": {s.stream}, "scope": {"all"}, "confirm": {"yes"}})
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusForbidden, res.StatusCode, "write %v: no token, or read-only", write)
			n, err := b.rdb.XLen(t.Context(), completion.DeadLetterStreamFor(s.stream)).Result()
			require.NoError(t, err)
			assert.Equal(t, int64(deadSize), n, "nothing purged")

			srv.stop()
			assert.Equal(t, exitOK, <-srv.code, "stderr: %s", srv.stderr)
			srv.code <- exitOK // for the cleanup
		}
	})
}

func TestServeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "extra"},
		{"serve", "-listen", ""},
		{"serve", "-sample", "1ms"},
		{"serve", "-listen", "no-port"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, errOut, code := cli(t, append([]string{"-addr", "127.0.0.1:1"}, args...)...)
			assert.Equal(t, exitUsage, code, errOut)
			assert.Contains(t, errOut, "completion serve:")
		})
	}
}
