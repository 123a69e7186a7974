package redistest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// keysOnEveryNode returns, for each node of c, a key whose slot that node
// serves.
func keysOnEveryNode(t *testing.T, c *redistest.Cluster) []string {
	t.Helper()
	keys := make([]string, c.Len())
	found := 0
	for i := 0; found < c.Len() && i < 10000; i++ {
		k := fmt.Sprintf("key:%d", i)
		if n := c.MasterFor(k); keys[n] == "" {
			keys[n] = k
			found++
		}
	}
	require.Equal(t, c.Len(), found, "no key found for some node")
	return keys
}

func TestClusterKeySlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT on Redis 7.0.
	require.Equal(t, 12182, redistest.KeySlot("foo"))
	require.Equal(t, 5061, redistest.KeySlot("bar"))
	require.Equal(t, redistest.KeySlot("user1000"), redistest.KeySlot("{user1000}.following"))
	require.Equal(t, redistest.KeySlot("a{}b"), redistest.KeySlot("a{}b"))
	require.NotEqual(t, redistest.KeySlot("b"), redistest.KeySlot("a{}b"), "an empty hash tag hashes the whole key")
}

func TestStartCluster(t *testing.T) {
	ctx := context.Background()
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		require.Equal(t, 3, c.Len())
		addrs := c.Addrs()
		require.Len(t, addrs, 3)
		seen := map[string]bool{}
		for i, a := range addrs {
			require.False(t, seen[a], "duplicate address %s", a)
			seen[a] = true
			require.Equal(t, a, c.Node(i).Addr())
			require.True(t, strings.HasPrefix(a, "127.0.0.1:"), a)
			pids = append(pids, c.Node(i).Pid())
		}

		cc := c.Client(t)
		keys := keysOnEveryNode(t, c)
		for _, k := range keys {
			require.NoError(t, cc.Set(ctx, k, "v-"+k, 0).Err())
		}
		for i, k := range keys {
			require.Equal(t, "v-"+k, cc.Get(ctx, k).Val())
			// MasterFor agrees with the cluster: the key is on node i,
			// which answers for it directly, and its slot is node i's.
			slot, err := cc.ClusterKeySlot(ctx, k).Result()
			require.NoError(t, err)
			require.Equal(t, int64(redistest.KeySlot(k)), slot)
			node := c.Node(i).Client(t)
			require.Equal(t, "v-"+k, node.Get(ctx, k).Val(), "key %s must live on node %d", k, i)
			other := c.Node((i + 1) % c.Len()).Client(t)
			require.ErrorContains(t, other.Get(ctx, k).Err(), "MOVED", "key %s must not be served by node %d", k, (i+1)%c.Len())
		}
		// CROSSSLOT is raised as on any cluster.
		require.ErrorContains(t, cc.Do(ctx, "MGET", keys[0], keys[1]).Err(), "CROSSSLOT")

		// Kill the master of keys[1]: its slots are down, the rest serve.
		victim := 1
		pid := c.Node(victim).Pid()
		c.Node(victim).Kill()
		require.True(t, processGone(pid), "killed node must be reaped")
		require.Zero(t, c.Node(victim).Pid())
		require.Error(t, cc.Get(ctx, keys[victim]).Err())
		require.Equal(t, "v-"+keys[0], cc.Get(ctx, keys[0]).Val(), "other masters keep serving")
		require.NoError(t, cc.Set(ctx, keys[2], "w", 0).Err())

		c.Node(victim).Restart()
		require.NotZero(t, c.Node(victim).Pid())
		c.WaitOK(t)
		require.Eventually(t, func() bool {
			v, err := cc.Get(ctx, keys[victim]).Result()
			return err == nil && v == "v-"+keys[victim]
		}, 10*time.Second, 20*time.Millisecond, "the restarted master must serve its data again (AOF)")
		require.NoError(t, cc.Set(ctx, keys[victim], "after", 0).Err())
		require.Equal(t, "after", cc.Get(ctx, keys[victim]).Val())
		require.Equal(t, "w", cc.Get(ctx, keys[2]).Val())

		// Pause/Resume of one node works as for a single server.
		c.Node(0).Pause()
		short := redis.NewClient(&redis.Options{Addr: c.Node(0).Addr(), MaxRetries: -1, ReadTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { _ = short.Close() })
		require.Error(t, short.Ping(ctx).Err())
		c.Node(0).Resume()
		c.WaitOK(t)
	})
	for _, pid := range pids {
		require.True(t, processGone(pid), "pid %d must be stopped and reaped by the cleanup", pid)
	}
	// Tests marked Parallel have not started yet, so no server goroutine
	// may be left (each one waits for its process).
	require.Eventually(t, func() bool { return !strings.Contains(goroutineDump(), "internal/redistest.(*Server)") },
		time.Second, time.Millisecond, "a server goroutine outlived the cluster's cleanup")
}

func TestStartClusterSingleMaster(t *testing.T) {
	c := redistest.StartCluster(t, 1)
	cc := c.Client(t)
	ctx := context.Background()
	require.NoError(t, cc.Set(ctx, "a", "1", 0).Err())
	require.NoError(t, cc.Set(ctx, "b", "2", 0).Err())
	require.Equal(t, 0, c.MasterFor("a"))
	require.Equal(t, "2", cc.Get(ctx, "b").Val())
}

func TestClusterMigrateSlot(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	cc := c.Client(t)
	keys := keysOnEveryNode(t, c)
	k := keys[0]
	require.NoError(t, cc.Set(ctx, k, "v", 0).Err())
	require.NoError(t, cc.Set(ctx, "{"+k+"}:other", "w", 0).Err())

	c.MigrateSlot(t, redistest.KeySlot(k), 2)
	require.Equal(t, 2, c.MasterFor(k))
	require.Equal(t, 2, c.MasterFor("{"+k+"}:other"))
	require.Equal(t, 1, c.MasterFor(keys[1]), "other slots stay where they were")
	require.Equal(t, "v", c.Node(2).Client(t).Get(ctx, k).Val(), "the key moved with its slot")
	require.Equal(t, "w", c.Node(2).Client(t).Get(ctx, "{"+k+"}:other").Val())
	require.ErrorContains(t, c.Node(0).Client(t).Get(ctx, k).Err(), "MOVED")
	require.Equal(t, "v", cc.Get(ctx, k).Val(), "the cluster client follows the move")
	require.NoError(t, cc.Set(ctx, k, "v2", 0).Err())

	// And back again.
	c.MigrateSlot(t, redistest.KeySlot(k), 0)
	require.Equal(t, 0, c.MasterFor(k))
	require.Equal(t, "v2", c.Node(0).Client(t).Get(ctx, k).Val())
}
