package inspect_test

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/keys"
)

// newMini returns a client to a fresh miniredis.
func newMini(t testing.TB) *redis.Client {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestNewDefaults(t *testing.T) {
	rdb := newMini(t)
	in := newInspector(t, rdb, inspect.Config{Stream: completion.DefaultStream})
	assert.Equal(t, inspect.Config{Stream: completion.DefaultStream, Group: completion.DefaultGroup, Partitions: 1}, in.Config())
	assert.Equal(t, []string{completion.DeadLetterStreamFor(completion.DefaultStream)}, in.DeadLetterStreams())

	// The consumer's default, in the stream's cluster slot.
	in = newInspector(t, rdb, inspect.Config{Stream: "s"})
	assert.Equal(t, []string{completion.DeadLetterStreamFor("s")}, in.DeadLetterStreams())
	assert.Equal(t, []string{"{s}:dead"}, in.DeadLetterStreams())
	in = newInspector(t, rdb, inspect.Config{Stream: "x:{s}"})
	assert.Equal(t, []string{"x:{s}:dead"}, in.DeadLetterStreams())
	// One set is the one used, and Config reports it.
	in = newInspector(t, rdb, inspect.Config{Stream: "s", Group: "workers", DeadLetterStream: "elsewhere"})
	assert.Equal(t, inspect.Config{Stream: "s", Group: "workers", DeadLetterStream: "elsewhere", Partitions: 1}, in.Config())
	assert.Equal(t, []string{"elsewhere"}, in.DeadLetterStreams())
	// The caller's slice is a copy.
	in.DeadLetterStreams()[0] = "changed"
	assert.Equal(t, []string{"elsewhere"}, in.DeadLetterStreams())

	_, err := inspect.New(rdb, inspect.Config{Stream: "s", DeadLetterStream: "s"})
	assert.ErrorIs(t, err, completion.ErrInvalidConfig)
	_, err = inspect.New(rdb, inspect.Config{})
	assert.ErrorIs(t, err, completion.ErrInvalidConfig)
	assert.ErrorContains(t, err, "Stream is empty")
	_, err = inspect.New(nil, inspect.Config{Stream: "s"})
	assert.ErrorIs(t, err, completion.ErrNilArgument)
	_, err = inspect.New((*redis.Client)(nil), inspect.Config{Stream: "s"})
	assert.ErrorIs(t, err, completion.ErrNilArgument, "a typed nil")
	_, err = inspect.New((*redis.ClusterClient)(nil), inspect.Config{Stream: "s"})
	assert.ErrorIs(t, err, completion.ErrNilArgument, "a typed nil")
}

func TestSameNode(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { _ = ring.Close() })
	rdb := newMini(t)
	type wrapper struct{ *redis.Client }
	tests := []struct {
		name   string
		client inspect.Client
		a, b   string
		want   bool
	}{
		{"client", rdb, "s", "s:dead", true},
		{"wrapper of a client", wrapper{rdb}, "s", "s:dead", true},
		{"interface only, shared tag", plainClient{rdb}, "x{s}", "y{s}:dead", true},
		{"interface only, no tag", plainClient{rdb}, "s", "s:dead", false},
		{"cluster, shared tag", cluster, "{s}", "{s}:dead", true},
		{"cluster, other slots", cluster, "s", "s:dead", false},
		{"ring, shared tag", ring, "x{s}", "y{s}:dead", true},
		{"ring, no tag", ring, "s", "s:dead", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, keys.TopologyOf(tt.client).SameNode(tt.a, tt.b))
		})
	}
}

func TestPartitionsConfig(t *testing.T) {
	rdb := newMini(t)
	tests := []struct {
		name string
		cfg  inspect.Config
		want string // "" for valid
		n    int    // the partitions of a valid one
	}{
		{"default", inspect.Config{Stream: "s"}, "", 1},
		{"not partitioned", inspect.Config{Stream: "s", Partitions: 1}, "", 1},
		{"partitioned", inspect.Config{Stream: "s", Partitions: 4}, "", 4},
		{"most partitions", inspect.Config{Stream: "s", Partitions: completion.MaxPartitions}, "", completion.MaxPartitions},
		{"too many", inspect.Config{Stream: "s", Partitions: completion.MaxPartitions + 1}, "from 1 to 1024", 0},
		{"negative", inspect.Config{Stream: "s", Partitions: -1}, "Partitions is -1", 0},
		{"hash tag", inspect.Config{Stream: "{s}", Partitions: 2}, "must not carry a {hash tag}", 0},
		{"hash tag, one partition", inspect.Config{Stream: "{s}", Partitions: 1}, "", 1},
		{"dead letters in a partition", inspect.Config{Stream: "s", Partitions: 2, DeadLetterStream: completion.PartitionStream("s", 1, 2)}, "key of partition 1 of 2", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := inspect.New(rdb, tt.cfg)
			if tt.want != "" {
				require.ErrorIs(t, err, completion.ErrInvalidConfig)
				assert.ErrorContains(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.n, in.Config().Partitions)
		})
	}

	// Partitions 1 is the stream itself, as for a Consumer.
	in := newInspector(t, rdb, inspect.Config{Stream: "s", Partitions: 1})
	assert.Equal(t, []string{"{s}:dead"}, in.DeadLetterStreams())
	i, key := in.PartitionFor("t-1")
	assert.Equal(t, 0, i)
	assert.Equal(t, "s", key)

	// Partitioned: each partition has its own dead-letter stream, so
	// Config names none; DeadLetterStreams lists them by partition.
	in = newInspector(t, rdb, inspect.Config{Stream: "s", Partitions: 4})
	assert.Equal(t, inspect.Config{Stream: "s", Group: completion.DefaultGroup, Partitions: 4}, in.Config())
	var dead []string
	for p := range 4 {
		dead = append(dead, completion.DeadLetterStreamFor(completion.PartitionStream("s", p, 4)))
	}
	assert.Equal(t, dead, in.DeadLetterStreams())
	for _, task := range []string{"t-1", "t-2", "t-3"} {
		i, key := in.PartitionFor(task)
		assert.Equal(t, keys.PartitionOf(task, 4), i)
		assert.Equal(t, completion.PartitionStream("s", i, 4), key)
	}
	// Partitions sharing one dead-letter stream.
	in = newInspector(t, rdb, inspect.Config{Stream: "s", Partitions: 4, DeadLetterStream: "all-dead"})
	assert.Equal(t, []string{"all-dead"}, in.DeadLetterStreams())
}
