package taskstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/redisregistry"
)

// clusterClient returns a cluster client named name (CLIENT SETNAME on
// every connection), closed when the test ends.
func clusterClient(t *testing.T, c *redistest.Cluster, name string) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                    c.Addrs(),
		ClientName:               name,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// tasksOnEveryNode returns n task ids per node, by where their streams live.
func tasksOnEveryNode(c *redistest.Cluster, s *Streams, n int) []string {
	per := make([]int, c.Len())
	var ids []string
	for i := 0; len(ids) < n*c.Len(); i++ {
		id := fmt.Sprintf("t-%d", i)
		if node := c.MasterFor(s.Key(id)); per[node] < n {
			per[node]++
			ids = append(ids, id)
		}
	}
	return ids
}

// On a cluster the hub serves tasks on every node through one pub/sub
// connection (classic PUBLISH reaches every node) and at most Readers
// connections per node; the ready handler writes in its cross-node order;
// when the node the hub listens on dies, the hub moves to another and
// loses nothing of the tasks that are still reachable.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	ctx := context.Background()
	writer := c.Client(t)
	ws := newTestStreams(t, writer, Config{})
	hs := newTestStreams(t, clusterClient(t, c, "hub"), Config{})
	h := startHub(t, hs, HubConfig{ErrorBackoff: 10 * time.Millisecond, MaxErrorBackoff: 100 * time.Millisecond})
	ids := tasksOnEveryNode(c, ws, 5)

	t.Run("every node", func(t *testing.T) {
		wait := watchAll(t, h, ids)
		for _, id := range ids {
			for j := range 3 {
				_, err := ws.Append(ctx, id, ev(j))
				require.NoError(t, err)
			}
			_, err := ws.Finish(ctx, id)
			require.NoError(t, err)
		}
		got, errs := wait()
		for i := range ids {
			require.ErrorIs(t, errs[i], io.EOF)
			assert.Equal(t, []string{string(ev(0)), string(ev(1)), string(ev(2)), FinishEvent}, got[i])
		}
		// Per node: up to Readers for reads and the canary (which shares
		// the readers' slots), one the cluster client keeps for its
		// topology (CLUSTER SLOTS), and on one node the pub/sub
		// connection.
		var per []int
		for i := range c.Len() {
			list, err := c.Node(i).Client(t).ClientList(ctx).Result()
			require.NoError(t, err)
			n := strings.Count(list, " name=hub ")
			per = append(per, n)
			assert.LessOrEqual(t, n, DefaultReaders+2, "node %d", i)
		}
		t.Logf("hub connections per node: %v", per)
	})

	t.Run("handler", func(t *testing.T) {
		reg, err := redisregistry.New(writer, redisregistry.Config{})
		require.NoError(t, err)
		handler, err := NewHandler(ws, reg, HandlerConfig{Logger: quietLog})
		require.NoError(t, err)
		consumer, err := completion.NewConsumer(writer, reg, handler, completion.Config{Block: 100 * time.Millisecond, Logger: quietLog})
		require.NoError(t, err)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- consumer.Run(runCtx) }()
		defer func() { stop(); require.NoError(t, <-done) }()
		for i := range 6 {
			id := fmt.Sprintf("h-%d", i)
			require.NoError(t, reg.Register(ctx, completion.Task{TaskID: id, SessionID: "s", ToolCallID: "call-" + id, ToolName: "n", OperationID: "op-" + id}))
			_, err := completion.Publish(ctx, writer, completion.DefaultStream, completion.Message{OperationID: "op-" + id, TaskID: id, Success: i%2 == 0, Result: json.RawMessage(`{"i":1}`)})
			require.NoError(t, err)
		}
		for i := range 6 {
			o, err := h.AwaitOperation(ctx, reg, fmt.Sprintf("op-h-%d", i))
			require.NoError(t, err)
			assert.Equal(t, i%2 == 0, o.Success)
			want := map[bool]string{true: "completed", false: "failed"}[i%2 == 0]
			require.Eventually(t, func() bool {
				task, err := reg.LookupTask(ctx, "", fmt.Sprintf("h-%d", i))
				return err == nil && task.Status == want
			}, 10*time.Second, time.Millisecond)
			evs, err := ws.Read(ctx, fmt.Sprintf("h-%d", i), "", 0)
			require.NoError(t, err)
			assert.Len(t, evs, 2)
		}
	})

	t.Run("listening node dies", func(t *testing.T) {
		var ids []string
		for _, id := range tasksOnEveryNode(c, ws, 3) {
			ids = append(ids, "d-"+id)
		}
		wait := watchAll(t, h, ids)
		node := -1
		require.Eventually(t, func() bool {
			for i := range c.Len() {
				list, err := c.Node(i).Client(t).ClientList(ctx).Result()
				require.NoError(t, err)
				for _, line := range strings.Split(list, "\n") {
					if strings.Contains(line, " name=hub ") && strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
						node = i
					}
				}
			}
			return node >= 0
		}, 10*time.Second, 10*time.Millisecond, "the hub's pub/sub connection is on some node")
		c.Node(node).Kill()
		for _, id := range ids { // the tasks still reachable go on
			if c.MasterFor(ws.Key(id)) != node {
				_, err := ws.Append(ctx, id, ev(1))
				require.NoError(t, err)
				_, err = ws.Finish(ctx, id)
				require.NoError(t, err)
			}
		}
		c.Node(node).Restart()
		c.WaitOK(t)
		for _, id := range ids { // and those of the node that came back
			if c.MasterFor(ws.Key(id)) == node {
				_, err := ws.Append(ctx, id, ev(1))
				require.NoError(t, err)
				_, err = ws.Finish(ctx, id)
				require.NoError(t, err)
			}
		}
		got, errs := wait()
		for i := range ids {
			require.ErrorIs(t, errs[i], io.EOF, "task %s", ids[i])
			assert.Equal(t, []string{string(ev(1)), FinishEvent}, got[i])
		}
		t.Logf("hub stats %+v", h.Stats())
	})
}
