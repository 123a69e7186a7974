package inspect

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/keys"
)

const maxSeq = "18446744073709551615"

func TestNextID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"5-0", "5-1"},
		{"5-41", "5-42"},
		{"5", "5-1"},
		{"5-" + maxSeq, "6-0"},
		{"0-0", "0-1"},
		// No id follows the largest; text that is no id has none either.
		{maxSeq + "-" + maxSeq, ""},
		{"", ""},
		{"x", ""},
		{"5-x", ""},
		{"-5", ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, nextID(tt.in), "nextID(%q)", tt.in)
	}
}

func TestParseStreamID(t *testing.T) {
	tests := []struct {
		in   string
		end  bool
		want streamID
	}{
		{"5-3", false, streamID{5, 3}},
		{"5-3", true, streamID{5, 3}},
		{"5", false, streamID{5, 0}},
		{"5", true, streamID{5, ^uint64(0)}}, // a range's end covers the millisecond
		{"0-0", false, streamID{0, 0}},
		{maxSeq + "-" + maxSeq, false, streamID{^uint64(0), ^uint64(0)}},
	}
	for _, tt := range tests {
		got, err := parseStreamID(tt.in, tt.end)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, "parseStreamID(%q, %v)", tt.in, tt.end)
	}
	for _, bad := range []string{"", "x", "5-", "-5", "5-x", "5-1-1", "1" + maxSeq, "+", "-"} {
		_, err := parseStreamID(bad, false)
		assert.ErrorContains(t, err, "is not a stream id", "parseStreamID(%q)", bad)
	}
}

func TestStreamIDNextPrev(t *testing.T) {
	maxID := streamID{^uint64(0), ^uint64(0)}
	tests := []struct {
		id, next, prev   streamID
		hasNext, hasPrev bool
	}{
		{streamID{5, 3}, streamID{5, 4}, streamID{5, 2}, true, true},
		{streamID{5, 0}, streamID{5, 1}, streamID{4, ^uint64(0)}, true, true},
		{streamID{5, ^uint64(0)}, streamID{6, 0}, streamID{5, ^uint64(0) - 1}, true, true},
		{streamID{0, 0}, streamID{0, 1}, streamID{}, true, false},
		{maxID, streamID{}, streamID{^uint64(0), ^uint64(0) - 1}, false, true},
	}
	for _, tt := range tests {
		next, ok := tt.id.next()
		assert.Equal(t, tt.hasNext, ok, "%v.next()", tt.id)
		assert.Equal(t, tt.next, next, "%v.next()", tt.id)
		prev, ok := tt.id.prev()
		assert.Equal(t, tt.hasPrev, ok, "%v.prev()", tt.id)
		assert.Equal(t, tt.prev, prev, "%v.prev()", tt.id)
	}
	assert.Equal(t, "5-3", streamID{5, 3}.String())
}

func TestCompareStreamIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"1-10", "1-9", 1}, // by number, not as text
		{"9-0", "10-0", -1},
		{"2", "2-0", 0},
		{"x", "y", -1}, // text that is not an id compares as text
		{"1-0", "", 1},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, compareStreamIDs(tt.a, tt.b), "compareStreamIDs(%q, %q)", tt.a, tt.b)
	}
}

func TestOriginalField(t *testing.T) {
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"data", "data", true},
		{"traceparent", "traceparent", true},
		{"dl_reason", "", false},
		{"dl_note", "", false},            // a dl_ name is the dead letter's own ...
		{"orig_dl_note", "dl_note", true}, // ... the producer's came with orig_
		{"orig_orig_x", "orig_x", true},   // one prefix only is stripped
		{"orig_", "", true},
		{"orig_orig_", "orig_", true},
		{"DL_x", "DL_x", true},
		{"x_dl_y", "x_dl_y", true},
	}
	for _, tt := range tests {
		got, ok := originalField(tt.name)
		assert.Equal(t, tt.ok, ok, "originalField(%q)", tt.name)
		assert.Equal(t, tt.want, got, "originalField(%q)", tt.name)
	}
}

func newMini(t testing.TB) *redis.Client {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestParsePosition(t *testing.T) {
	rdb := newMini(t)
	one, err := New(rdb, Config{Stream: "s"})
	require.NoError(t, err)
	four, err := New(rdb, Config{Stream: "s", Partitions: 4})
	require.NoError(t, err)
	tests := []struct {
		in   *Inspector
		s    string
		end  bool
		want position
	}{
		{one, "5-3", false, position{part: -1, id: streamID{5, 3}, full: true}},
		{one, "5", false, position{part: -1, id: streamID{5, 0}}},
		{one, "5", true, position{part: -1, id: streamID{5, ^uint64(0)}}},
		{one, "0/5-3", false, position{part: -1, id: streamID{5, 3}, full: true}}, // one partition: 0/ID is ID
		{four, "5-3", false, position{part: -1, id: streamID{5, 3}, full: true}},
		{four, "2/5-3", false, position{part: 2, id: streamID{5, 3}, full: true}},
		{four, "3/5", true, position{part: 3, id: streamID{5, ^uint64(0)}}},
	}
	for _, tt := range tests {
		got, err := tt.in.parsePosition(tt.s, tt.end)
		require.NoError(t, err, tt.s)
		assert.Equal(t, tt.want, got, "parsePosition(%q, %v) of %d partitions", tt.s, tt.end, len(tt.in.parts))
	}
	bad := []struct {
		in   *Inspector
		s    string
		want string
	}{
		{one, "x", "want ms-seq"},
		{one, "1/5-3", "partition from 0 to 0"},
		{four, "4/5-3", "partition from 0 to 3"},
		{four, "-1/5-3", "partition from 0 to 3"},
		{four, "01/5-3", "partition from 0 to 3"},
		{four, "2/x", "want ID or PARTITION/ID"},
		{four, "", "not an id"},
	}
	for _, tt := range bad {
		_, err := tt.in.parsePosition(tt.s, false)
		assert.ErrorContains(t, err, tt.want, "parsePosition(%q)", tt.s)
	}
}

func TestStartBounds(t *testing.T) {
	rdb := newMini(t)
	in, err := New(rdb, Config{Stream: "s", Partitions: 3})
	require.NoError(t, err)
	same := func(p int) int { return p }
	tests := []struct {
		start string
		want  []string
	}{
		{"", []string{"-", "-", "-"}},
		{"-", []string{"-", "-", "-"}},
		{"5-3", []string{"5-3", "5-3", "5-3"}},
		{"(5-3", []string{"5-4", "5-4", "5-4"}},
		{"5", []string{"5-0", "5-0", "5-0"}},
		// A Ref: partitions before it start after the id, those after it
		// at the id; its own partition at it, or after it when exclusive.
		{"1/5-3", []string{"5-4", "5-3", "5-3"}},
		{"(1/5-3", []string{"5-4", "5-4", "5-3"}},
		{"(2/" + maxSeq + "-" + maxSeq, []string{"", "", ""}}, // nothing follows the largest id
	}
	for _, tt := range tests {
		got, err := in.startBounds(tt.start, 3, same)
		require.NoError(t, err, tt.start)
		assert.Equal(t, tt.want, got, "startBounds(%q)", tt.start)
	}
	_, err = in.startBounds("(x", 3, same)
	assert.ErrorContains(t, err, "start \"x\" is not an id")
}

// wrapped embeds a *redis.Client, as a program's own client type may.
type wrapped struct{ *redis.Client }

// plain hides the client's methods but those of Client.
type plain struct{ Client }

func TestNewTopology(t *testing.T) {
	rdb := newMini(t)
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { _ = ring.Close() })
	tests := []struct {
		name   string
		client Client
		want   keys.Topology
	}{
		{"client", rdb, keys.SingleNode}, // a *redis.Client redrives with a script
		{"wrapper of a client", wrapped{rdb}, keys.SingleNode},
		{"interface only", plain{rdb}, keys.Sharded},
		{"cluster", cluster, keys.Cluster},
		{"ring", ring, keys.Sharded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := New(tt.client, Config{Stream: "s"})
			require.NoError(t, err)
			assert.Equal(t, tt.want, in.topo)
		})
	}
}
