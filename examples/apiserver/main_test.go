package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
)

func TestTaskCompletionReachesTheBrowser(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := newServer(rdb, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.consumer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	srv := httptest.NewServer(s.routes())
	t.Cleanup(srv.Close)
	t.Cleanup(s.hub.closeAll)

	require.Eventually(t, func() bool { return s.consumer.State() == completion.StateRunning }, 10*time.Second, 10*time.Millisecond)
	resp, err := http.Get(srv.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	events, err := http.Get(srv.URL + "/events?session=s1")
	require.NoError(t, err)
	defer events.Body.Close()
	lines := bufio.NewScanner(events.Body)
	require.True(t, lines.Scan()) // ": connected"

	resp, err = http.Post(srv.URL+"/tasks?session=s1", "", nil)
	require.NoError(t, err)
	var task completion.Task
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&task))
	resp.Body.Close()

	var data string
	for lines.Scan() {
		if d, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			data = d
			break
		}
	}
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(data), &ev))
	assert.Equal(t, task.TaskID, ev["task_id"])
	assert.Equal(t, task.OperationID, ev["operation_id"])
}
