package inspect_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// clusterMasters is the size of the test cluster.
const clusterMasters = 3

// On Redis Cluster the partitions live on different masters: every command
// the inspector sends must touch one partition's keys only.
func TestPartitionsOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, clusterMasters)
	rdb := cl.Client(t)
	ctx := context.Background()
	const parts = 6
	stream := fmt.Sprintf("inspect-test:partitions:%08x", rand.Uint32())
	masters := map[int]bool{}
	for i := range parts {
		masters[cl.MasterFor(completion.PartitionStream(stream, i, parts))] = true
	}
	require.Len(t, masters, clusterMasters, "the partitions spread over every master")

	s := newPartScenario(t, rdb, stream, parts, 12, "")
	s.addBacklog(t, 40, 2)
	in := newInspector(t, rdb, inspect.Config{Stream: stream, Group: "g", Partitions: parts})
	total := s.tasks + len(s.garbage)

	si, err := in.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, sumOf(s.length), si.Length)
	assert.Equal(t, int64(total), si.DeadLetterLength)
	g, ok := si.Group("g")
	require.True(t, ok)
	assert.Equal(t, int64(parts*2), g.Pending)
	assert.Equal(t, int64(40-parts*2), g.Lag)
	pending, err := in.Pending(ctx, inspect.PendingQuery{Group: "g"})
	require.NoError(t, err)
	assert.Len(t, pending, parts*2)
	second, err := in.Pending(ctx, inspect.PendingQuery{Start: "(" + pending[2].Ref, Count: 3})
	require.NoError(t, err)
	require.Len(t, second, 3)
	for i, e := range second {
		assert.Equal(t, pending[3+i].Ref, e.Ref)
	}
	_, err = in.Pending(ctx, inspect.PendingQuery{Group: "no-such-group"})
	assert.ErrorContains(t, err, `its one group is "g"`)
	dls := allDeadLetters(t, in)
	require.Len(t, dls, total)
	reasons, err := in.DeadLetterReasons(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{completion.ReasonTaskNotFound: int64(s.tasks), completion.ReasonMalformed: int64(len(s.garbage))}, reasons)
	one, ok, err := in.DeadLetter(ctx, dls[3].Ref)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dls[3], one)
	e, ok, err := in.Entry(ctx, fmt.Sprintf("%d/%s", dls[3].Partition, dls[3].SourceID))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, dls[3].Fields, e.Fields)

	// Redrive: each into its own partition, on its own master. A bare id
	// is looked for on every master: one no other partition has (it is
	// later than any the consumer wrote). A bare millisecond is refused,
	// naming what it holds on any master.
	const lone = "9999999999999-5"
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(s.keys[4]), ID: lone, Values: []any{completion.DataField,
		`{"operation_id":"op-lone","task_id":"t","success":true,"result":null,"error":null}`}}).Err())
	n, err := in.Redrive(ctx, "9999999999999")
	assert.ErrorContains(t, err, "that millisecond holds 4/"+lone)
	assert.Zero(t, n)
	before := s.lengths(t)
	n, err = in.Redrive(ctx, dls[0].Ref, lone)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	n, err = in.RedriveAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, total-1, n)
	after := s.lengths(t)
	for p := range parts {
		want := before[p] + int64(len(s.dead[p]))
		if p == 4 {
			want++
		}
		assert.Equal(t, want, after[p], "partition %d", p)
	}

	// Tail: a reader per partition.
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan inspect.Entry, 100)
	done := make(chan error, 1)
	go func() { done <- in.Tail(tctx, "$", func(e inspect.Entry) error { seen <- e; return nil }) }()
	var live inspect.Entry
	for i := 0; live.ID == ""; i++ {
		_, err := in.PublishTest(ctx, completion.Message{OperationID: fmt.Sprintf("live-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		require.NoError(t, err)
		select {
		case live = <-seen:
		case <-time.After(100 * time.Millisecond):
		}
		require.Less(t, i, 100, "Tail from $ saw nothing")
	}
	p, key := in.PartitionFor(live.Message.TaskID)
	assert.Equal(t, p, live.Partition)
	assert.Equal(t, key, live.Stream)
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Tail did not return after its context ended")
	}

	// Purge: no consumer runs, so put two dead letters back by hand and
	// purge them all.
	for _, p := range []int{1, 4} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: completion.DeadLetterStreamFor(s.keys[p]), Values: []any{completion.DataField, "x"}}).Err())
	}
	n, err = in.PurgeAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}
