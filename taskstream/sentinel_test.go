package taskstream

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/redisregistry"
)

// Through a Sentinel failover client: the handler's one script, Await, and
// a subscriber that keeps its place across a failover.
func TestSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	writer := s.Client(t)
	require.Equal(t, keys.SingleNode, keys.TopologyOf(writer), "a failover client is one node: the handler's writes are one script")
	ws := newTestStreams(t, writer, Config{})
	h := startHub(t, newTestStreams(t, s.Client(t), Config{}), HubConfig{HealthCheckInterval: 250 * time.Millisecond, ErrorBackoff: 10 * time.Millisecond, MaxErrorBackoff: 200 * time.Millisecond})
	reg, err := redisregistry.New(writer, redisregistry.Config{})
	require.NoError(t, err)
	handler, err := NewHandler(ws, reg, HandlerConfig{Logger: quietLog})
	require.NoError(t, err)
	consumer, err := completion.NewConsumer(writer, reg, handler, completion.Config{Block: 100 * time.Millisecond, Logger: quietLog,
		ErrorBackoff: 10 * time.Millisecond, MaxErrorBackoff: 200 * time.Millisecond})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- consumer.Run(runCtx) }()
	t.Cleanup(func() { stop(); require.NoError(t, <-done) })

	register := func(id string) {
		t.Helper()
		require.NoError(t, reg.Register(ctx, completion.Task{TaskID: id, SessionID: "s", ToolCallID: "call-" + id, ToolName: "n", OperationID: "op-" + id}))
	}
	publish := func(id string) {
		t.Helper()
		require.Eventually(t, func() bool {
			_, err := completion.Publish(ctx, writer, completion.DefaultStream, completion.Message{OperationID: "op-" + id, TaskID: id, Success: true, Result: json.RawMessage(`{"ok":true}`)})
			return err == nil
		}, 30*time.Second, 50*time.Millisecond)
	}

	register("a")
	publish("a")
	o, err := h.AwaitOperation(ctx, reg, "op-a")
	require.NoError(t, err)
	assert.True(t, o.Success)
	require.Eventually(t, func() bool {
		task, err := reg.LookupTask(ctx, "", "a")
		return err == nil && task.Status == "completed"
	}, 10*time.Second, time.Millisecond)

	register("b")
	sub, err := h.Subscribe(ctx, "b", "")
	require.NoError(t, err)
	_, err = ws.Append(ctx, "b", ev(1))
	require.NoError(t, err)
	e, err := next(t, sub)
	require.NoError(t, err)
	require.Equal(t, string(ev(1)), string(e.Data))
	require.NoError(t, writer.Do(ctx, "WAIT", 1, 5000).Err(), "replicated before the failover")

	s.Failover(t)
	// The client moves to the new master when the sentinels announce it;
	// a write before that would go to the old master, and be lost with it.
	_, port, _ := net.SplitHostPort(s.MasterAddr(t))
	require.Eventually(t, func() bool {
		info, err := writer.Info(ctx, "server").Result()
		return err == nil && strings.Contains(info, "tcp_port:"+port+"\r\n")
	}, 30*time.Second, 10*time.Millisecond, "the writer follows the new master")
	_, err = ws.Append(ctx, "b", ev(2))
	require.NoError(t, err)
	publish("b")
	rest, err := collect(t, sub)
	require.ErrorIs(t, err, io.EOF)
	outcome := OutcomeEvent(completion.Task{ToolCallID: "call-b", ToolName: "n"}, completion.Message{Success: true, Result: json.RawMessage(`{"ok":true}`)})
	assert.Equal(t, []string{string(ev(2)), string(outcome), FinishEvent}, datas(rest), "nothing lost or repeated across the failover")
	t.Logf("hub stats %+v", h.Stats())
}
