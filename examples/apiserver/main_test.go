package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/ssetest"
)

// startInProcess runs the server on miniredis in this process until the
// test ends, and returns its base URL.
func startInProcess(t *testing.T) string {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := options{consume: true, claimMinIdle: time.Minute, opMin: 10 * time.Millisecond, opMax: 50 * time.Millisecond, retry: time.Second}
	go func() { done <- run(ctx, rdb, ln, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("run did not return within 30s of its context's end")
		}
	})
	base := "http://" + ln.Addr().String()
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 10*time.Millisecond, "healthz turns 200")
	return base
}

// startTask starts a task and returns its ids.
func startTask(t *testing.T, base, session, user string) (taskID, opID string) {
	t.Helper()
	resp, err := http.Post(base+"/tasks?session="+session+"&user="+user, "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Len(t, body, 2, "exactly task_id and operation_id: %v", body)
	require.NotEmpty(t, body["task_id"])
	require.NotEmpty(t, body["operation_id"])
	return body["task_id"], body["operation_id"]
}

func TestTaskCompletionReachesTheBrowser(t *testing.T) {
	base := startInProcess(t)
	taskID, _ := startTask(t, base, "s1", "u1")

	resp, err := http.Get(base + "/tasks/" + taskID + "/events?user=u1")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var types []string
	var retry string
	require.NoError(t, ssetest.Read(resp.Body, func(f ssetest.Frame) bool {
		if f.Retry != "" {
			retry = f.Retry
		}
		if f.ID != "" {
			var ev struct{ Type string }
			require.NoError(t, json.Unmarshal([]byte(f.Data), &ev))
			types = append(types, ev.Type)
		}
		return true
	}), "the stream ends after the finish event")
	assert.Equal(t, "1000", retry)
	require.Len(t, types, 4)
	assert.Equal(t, "start", types[0])
	assert.Equal(t, "data-progress", types[1])
	assert.Contains(t, []string{"tool-output-available", "error"}, types[2])
	assert.Equal(t, "finish", types[3])

	for path, want := range map[string]int{
		"/tasks/" + taskID + "/events?user=u2": http.StatusForbidden,
		"/tasks/task-nobody/events?user=u1":    http.StatusNotFound,
		"/tasks?session=s1":                    http.StatusMethodNotAllowed,
		"/":                                    http.StatusOK,
	} {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, path)
		if path == "/" {
			assert.True(t, strings.Contains(string(b), "new EventSource("), "the page uses EventSource")
		}
	}
	resp, err = http.Post(base+"/tasks", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "session is required")
}
