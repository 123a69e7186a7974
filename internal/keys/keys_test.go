package keys

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestSlotMatchesRedis(t *testing.T) {
	// Values from CLUSTER KEYSLOT on Redis 7.0.
	for key, want := range map[string]uint16{
		"":                        0,
		"foo":                     12182,
		"chat:completions":        Slot("{chat:completions}:dead"),
		"{user1000}.following":    Slot("user1000"),
		"foo{}{bar}":              Slot("foo{}{bar}"), // empty first tag: the whole key
		"123456789":               12739,
		"{123456789}:anything:at": 12739,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d; want %d", key, got, want)
		}
	}
}

func TestHashTag(t *testing.T) {
	for key, want := range map[string]string{
		"plain": "plain", "{a}b": "a", "x{a}{b}": "a", "x{}y{a}": "x{}y{a}", "x{": "x{", "}{": "}{",
	} {
		if got := HashTag(key); got != want {
			t.Errorf("HashTag(%q) = %q; want %q", key, got, want)
		}
		if got, want := HasHashTag(key), want != key; got != want {
			t.Errorf("HasHashTag(%q) = %v; want %v", key, got, want)
		}
	}
}

func TestDeadLetterStream(t *testing.T) {
	for stream, want := range map[string]string{
		"chat:completions": "{chat:completions}:dead",
		"{orders}:done":    "{orders}:done:dead",
		"odd{":             "odd{:dead",
	} {
		if got := DeadLetterStream(stream); got != want {
			t.Errorf("DeadLetterStream(%q) = %q; want %q", stream, got, want)
		}
	}
}

func TestPartitionStreamSpreadsOverTheSlotSpace(t *testing.T) {
	for _, n := range []int{2, 3, 6, 16, MaxPartitions} {
		for i := range n {
			key := PartitionStream("s", i, n)
			lo, hi := uint16(i*16384/n), uint16((i+1)*16384/n)
			if s := Slot(key); s < lo || s >= hi {
				t.Fatalf("PartitionStream(s, %d, %d) = %q in slot %d; want [%d, %d)", i, n, key, s, lo, hi)
			}
		}
	}
	if got := PartitionStream("s", 0, 1); got != "s" {
		t.Errorf("one partition: %q; want the stream itself", got)
	}
}

type wrapped struct{ *redis.Client }
type wrappedCluster struct{ *redis.ClusterClient }

func TestTopologyOf(t *testing.T) {
	c := redis.NewClient(&redis.Options{})
	cc := redis.NewClusterClient(&redis.ClusterOptions{})
	ring := redis.NewRing(&redis.RingOptions{})
	defer c.Close()
	defer cc.Close()
	defer ring.Close()
	for _, tt := range []struct {
		client any
		want   Topology
	}{
		{c, SingleNode}, {wrapped{c}, SingleNode}, {c.Conn(), SingleNode},
		{cc, Cluster}, {wrappedCluster{cc}, Cluster},
		{ring, Sharded}, {struct{}{}, Sharded},
	} {
		if got := TopologyOf(tt.client); got != tt.want {
			t.Errorf("TopologyOf(%T) = %v; want %v", tt.client, got, tt.want)
		}
	}
	if !Sharded.SameNode("{a}x", "{a}y") || Sharded.SameNode("ax", "ay") {
		t.Error("Sharded: same node iff same hash tag")
	}
	if !Cluster.SameNode("123456789", "{123456789}x") || !SingleNode.SameNode("a", "b") {
		t.Error("Cluster: same node iff same slot; SingleNode: always")
	}
}
