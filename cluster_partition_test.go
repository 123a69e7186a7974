package completion

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Environment of a child consumer of a partitioned stream on a cluster
// (TestClusterPartitionedConsumerProcess).
const (
	partChildEnv        = "COMPLETION_PART_CHILD" // "1" in the child
	partChildEnvAddrs   = "COMPLETION_PART_ADDRS" // comma-separated cluster nodes
	partChildEnvStream  = "COMPLETION_PART_STREAM"
	partChildEnvParts   = "COMPLETION_PART_PARTITIONS"
	partChildEnvMinIdle = "COMPLETION_PART_CLAIM_MIN_IDLE_MS"
	partChildEnvWork    = "COMPLETION_PART_WORK_MS" // handlers sleep up to this long
)

// partitionedClusterConfig is the consumers' Config in the multi-process
// cluster test.
func partitionedClusterConfig(stream, name string, parts int, minIdle time.Duration) Config {
	cfg := testConfig(stream)
	cfg.Consumer = name
	cfg.Partitions = parts
	cfg.OrderByTask = true
	cfg.Concurrency = 8
	cfg.ClaimMinIdle = minIdle
	return cfg
}

// seenKey is the list in which the consumers record, in handling order,
// "<seq> <consumer>" for each completion of a task.
func seenKey(stream, task string) string { return stream + ":seen:" + task }

// TestClusterPartitionedConsumerProcess is the child process of
// TestClusterPartitionedProcesses: one consumer of the partitioned stream,
// through a ClusterClient, until its stdin closes.
func TestClusterPartitionedConsumerProcess(t *testing.T) {
	if os.Getenv(partChildEnv) != "1" {
		t.Skip("helper process of TestClusterPartitionedProcesses; runs only when re-executed with " + partChildEnv + "=1")
	}
	addrs := strings.Split(os.Getenv(partChildEnvAddrs), ",")
	stream, name := os.Getenv(partChildEnvStream), os.Getenv(childEnvConsumer)
	parts, err := strconv.Atoi(os.Getenv(partChildEnvParts))
	require.NoError(t, err)
	minIdle, err := strconv.Atoi(os.Getenv(partChildEnvMinIdle))
	require.NoError(t, err)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                    addrs,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer rdb.Close()

	work := 2 * time.Millisecond
	if ms, err := strconv.Atoi(os.Getenv(partChildEnvWork)); err == nil && ms > 0 {
		work = time.Duration(ms) * time.Millisecond
	}
	h := HandlerFunc(func(ctx context.Context, c *Completion) error {
		if err := hold(ctx, rand.N(work)); err != nil { // let handlers overlap
			return err
		}
		var seq int
		if _, err := fmt.Sscanf(string(c.Message.Result), `{"seq":%d}`, &seq); err != nil {
			return Permanent(err)
		}
		return rdb.RPush(ctx, seenKey(stream, c.Message.TaskID), fmt.Sprintf("%d %s", seq, name)).Err()
	})
	cfg := partitionedClusterConfig(stream, name, parts, time.Duration(minIdle)*time.Millisecond)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := NewConsumer(rdb, anyTask, h, cfg)
	require.NoError(t, err)
	runChild(t, c, name)
}

// partHarness runs consumer processes of one partitioned stream on a
// cluster and reads what they handled.
type partHarness struct {
	t            *testing.T
	cl           *redistest.Cluster
	rdb          *redis.ClusterClient
	stream       string
	parts, tasks int
	minIdle      time.Duration
	work         time.Duration // handlers sleep up to this long
	next         int           // completions published so far
}

func newPartHarness(t *testing.T, cl *redistest.Cluster, rdb *redis.ClusterClient, parts, tasks int) *partHarness {
	return &partHarness{t: t, cl: cl, rdb: rdb, stream: fmt.Sprintf("completion-test:mp:%08x", rand.Uint32()),
		parts: parts, tasks: tasks, minIdle: 3 * time.Second, work: 2 * time.Millisecond}
}

func (h *partHarness) start(name string) *childProc {
	return startChildTest(h.t, "TestClusterPartitionedConsumerProcess", map[string]string{
		partChildEnv:        "1",
		partChildEnvAddrs:   strings.Join(h.cl.Addrs(), ","),
		partChildEnvStream:  h.stream,
		partChildEnvParts:   strconv.Itoa(h.parts),
		partChildEnvMinIdle: strconv.Itoa(int(h.minIdle.Milliseconds())),
		partChildEnvWork:    strconv.Itoa(int(h.work.Milliseconds())),
		childEnvConsumer:    name,
	})
}

// owners counts the partitions each consumer owns, from the owner keys.
func (h *partHarness) owners() map[string]int {
	o := map[string]int{}
	for i := 0; i < h.parts; i++ {
		name, err := h.rdb.Get(context.Background(), keys.Owner(h.stream, i, h.parts, "g")).Result()
		if err == nil {
			o[name]++
		}
	}
	return o
}

func (h *partHarness) waitOwners(want map[string]int) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return assert.ObjectsAreEqual(want, h.owners()) }, 60*time.Second, 20*time.Millisecond,
		"owners: want %v, have %v", want, h.owners())
}

// publishUpTo publishes completions until n have been published in all;
// completion k is number k/tasks of task k%tasks.
func (h *partHarness) publishUpTo(n int) {
	h.t.Helper()
	for ; h.next < n; h.next++ {
		_, err := Publish(context.Background(), h.rdb, h.stream, Message{
			OperationID: fmt.Sprintf("op-%d", h.next), TaskID: fmt.Sprintf("t-%d", h.next%h.tasks), Success: true,
			Result: []byte(fmt.Sprintf(`{"seq":%d}`, h.next/h.tasks)),
		}, WithPartitions(h.parts))
		require.NoError(h.t, err)
	}
}

// seen returns, per task, the seq numbers handled in handling order, and
// how many completions each consumer handled.
func (h *partHarness) seen() (map[string][]int, map[string]int) {
	h.t.Helper()
	seqs, by := map[string][]int{}, map[string]int{}
	for i := 0; i < h.tasks; i++ {
		task := fmt.Sprintf("t-%d", i)
		vals, err := h.rdb.LRange(context.Background(), seenKey(h.stream, task), 0, -1).Result()
		require.NoError(h.t, err)
		for _, v := range vals {
			s, who, _ := strings.Cut(v, " ")
			n, _ := strconv.Atoi(s)
			seqs[task] = append(seqs[task], n)
			by[who]++
		}
	}
	return seqs, by
}

// waitHandled waits until every published completion was handled at least
// once.
func (h *partHarness) waitHandled() {
	h.t.Helper()
	distinct := func() int {
		seqs, _ := h.seen()
		n := 0
		for _, s := range seqs {
			m := map[int]bool{}
			for _, v := range s {
				m[v] = true
			}
			n += len(m)
		}
		return n
	}
	require.Eventually(h.t, func() bool { return distinct() >= h.next }, 60*time.Second, 50*time.Millisecond,
		"handled %d of %d", distinct(), h.next)
}

// checkSpread asserts that the partitions hold completions on every master
// and that nothing is left pending.
func (h *partHarness) checkSpread() {
	h.t.Helper()
	ctx := context.Background()
	perMaster := map[int][]int{}
	for i := 0; i < h.parts; i++ {
		m := h.cl.MasterFor(PartitionStream(h.stream, i, h.parts))
		perMaster[m] = append(perMaster[m], i)
	}
	assert.Len(h.t, perMaster, h.cl.Len(), "partitions by master: %v", perMaster)
	for m, ps := range perMaster {
		var n int64
		for _, i := range ps {
			l, err := h.rdb.XLen(ctx, PartitionStream(h.stream, i, h.parts)).Result()
			require.NoError(h.t, err)
			n += l
		}
		assert.Positive(h.t, n, "master %d should hold completions", m)
		h.t.Logf("master %d: partitions %v, %d entries", m, ps, n)
	}
	for i := 0; i < h.parts; i++ {
		key := PartitionStream(h.stream, i, h.parts)
		require.Eventually(h.t, func() bool {
			p, err := h.rdb.XPending(ctx, key, "g").Result()
			return err == nil && p.Count == 0
		}, 30*time.Second, 20*time.Millisecond, "partition %d: entries left pending", i)
	}
}

// TestClusterPartitionedProcesses splits a stream into six partitions over
// a three-master cluster and consumes it with consumer processes that join
// and leave while completions arrive.
func TestClusterPartitionedProcesses(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	rdb := cl.Client(t)

	// One process starts alone and owns every partition, two join and take
	// their share, then the first leaves and hands its partitions over.
	// Every completion is handled exactly once, each task's in order, by
	// whichever process owned the partition.
	t.Run("JoinAndLeave", func(t *testing.T) {
		const parts, tasks, perTask = 6, 30, 60
		h := newPartHarness(t, cl, rdb, parts, tasks)
		total := tasks * perTask
		a := h.start("A")
		h.waitOwners(map[string]int{"A": parts})
		h.publishUpTo(total / 3)
		b, c := h.start("B"), h.start("C")
		h.publishUpTo(2 * total / 3) // while B and C join and A hands partitions over
		h.waitOwners(map[string]int{"A": 2, "B": 2, "C": 2})
		stopped := make(chan error, 1)
		go func() { stopped <- a.stop(60 * time.Second) }()
		h.publishUpTo(total) // while A leaves
		require.NoError(t, <-stopped, "A should exit cleanly")
		h.waitOwners(map[string]int{"B": 3, "C": 3})
		h.waitHandled()

		seqs, by := h.seen()
		want := make([]int, perTask)
		for s := range want {
			want[s] = s
		}
		for i := 0; i < tasks; i++ {
			task := fmt.Sprintf("t-%d", i)
			assert.Equal(t, want, seqs[task], "task %s: each completion once, in order", task)
		}
		for _, name := range []string{"A", "B", "C"} {
			assert.Positive(t, by[name], "process %s should have handled completions (handled: %v)", name, by)
		}
		h.checkSpread()
		t.Logf("handled per process: %v", by)
		require.NoError(t, b.stop(60*time.Second))
		require.NoError(t, c.stop(60*time.Second))
		for _, p := range []*childProc{a, b, c} {
			checkChildOutput(t, p)
		}
	})

	// A process is SIGKILLed while it handles completions, and a new one
	// starts. Its partitions are taken over once their ownership expires.
	// Nothing is lost, and no completion is handled before an earlier one
	// of its task: a repeat only re-handles one the killed process handled
	// but had not acknowledged (delivery is at least once).
	t.Run("Sigkill", func(t *testing.T) {
		const parts, tasks, perTask = 6, 30, 100
		h := newPartHarness(t, cl, rdb, parts, tasks)
		h.work = 20 * time.Millisecond // slow enough that C dies mid-backlog
		total := tasks * perTask
		h.publishUpTo(2 * total / 3) // a backlog
		b, c := h.start("B"), h.start("C")
		h.waitOwners(map[string]int{"B": 3, "C": 3})
		require.Eventually(t, func() bool { _, by := h.seen(); return by["C"] >= 200 }, 60*time.Second, 10*time.Millisecond,
			"C should be handling completions")
		c.kill()
		_, by := h.seen()
		t.Logf("C killed after handling %d completions", by["C"])
		d := h.start("D")
		h.publishUpTo(total)
		h.waitOwners(map[string]int{"B": 3, "D": 3})
		h.waitHandled()

		seqs, by := h.seen()
		assert.Less(t, by["C"], total/2, "C should have died before it handled its share")
		repeats := 0
		for i := 0; i < tasks; i++ {
			task := fmt.Sprintf("t-%d", i)
			high := -1
			for _, s := range seqs[task] {
				switch {
				case s == high+1:
					high = s
				case s <= high:
					repeats++
				default:
					t.Errorf("task %s: completion %d handled before %d (handled: %v)", task, s, high+1, seqs[task])
				}
			}
			assert.Equal(t, perTask-1, high, "task %s: every completion handled", task)
		}
		assert.Positive(t, by["D"], "D should have taken partitions over and handled completions (handled: %v)", by)
		h.checkSpread()
		t.Logf("handled per process: %v; repeats after the SIGKILL: %d", by, repeats)
		require.NoError(t, b.stop(60*time.Second))
		require.NoError(t, d.stop(60*time.Second))
		for _, p := range []*childProc{b, d} {
			checkChildOutput(t, p)
		}
	})
}
