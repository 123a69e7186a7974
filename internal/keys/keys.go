// Package keys names the Redis keys the library uses and says where they
// live: hash tags, cluster slots, partition keys, and whether a client's
// scripts may touch two keys at once. Every rule about key placement is
// here, once.
package keys

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxPartitions is the most partitions a stream can be split into.
const MaxPartitions = 1024

// deadLetterSuffix is appended to a stream's name (inside a hash tag) for
// its default dead-letter stream.
const deadLetterSuffix = ":dead"

// HashTag returns the part of key that Redis Cluster hashes: the content of
// its first {hash tag} when that is not empty, otherwise the whole key.
func HashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// HasHashTag reports whether key has a non-empty {hash tag}.
func HasHashTag(key string) bool {
	i := strings.IndexByte(key, '{')
	return i >= 0 && strings.IndexByte(key[i+1:], '}') > 0
}

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag, mod 16384.
func Slot(key string) uint16 {
	return crc16(HashTag(key)) % 16384
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// DeadLetterStream returns the default dead-letter stream of stream: its
// name with ":dead", inside a hash tag so that both keys share a slot. A
// name with a hash tag keeps it ("{orders}:done" gives
// "{orders}:done:dead"); a name with braces but no usable tag just gets the
// suffix, and may land in another slot.
func DeadLetterStream(stream string) string {
	if HasHashTag(stream) || strings.ContainsAny(stream, "{}") {
		return stream + deadLetterSuffix
	}
	return "{" + stream + "}" + deadLetterSuffix
}

// CheckPartitions says why stream cannot be split into n partitions, if it
// cannot: n must be from 1 to MaxPartitions, and a partitioned stream must
// not carry a {hash tag}, which would pin every partition to one slot.
func CheckPartitions(stream string, n int) error {
	switch {
	case n < 1 || n > MaxPartitions:
		return fmt.Errorf("it must be from 1 to %d", MaxPartitions)
	case n > 1 && HasHashTag(stream):
		return fmt.Errorf("a partitioned stream must not carry a {hash tag} (the stream is %q): partitions get tags of their own", stream)
	}
	return nil
}

// PartitionStream returns the key of partition i (0 <= i < n) of stream
// split into n: stream + ":{" + tag + "}", where tag is "i.k" for the
// smallest k >= 0 whose slot lies in the i-th n-th of the slot space,
// [i*16384/n, (i+1)*16384/n). With n <= 1 it returns stream.
func PartitionStream(stream string, i, n int) string {
	if n <= 1 {
		return stream
	}
	lo := uint16(i * 16384 / n)
	hi := uint16((i + 1) * 16384 / n)
	prefix := strconv.Itoa(i) + "."
	for k := 0; ; k++ {
		tag := prefix + strconv.Itoa(k)
		if s := crc16(tag) % 16384; s >= lo && s < hi {
			return stream + ":{" + tag + "}"
		}
	}
}

// PartitionOf returns the partition (0 <= p < n) of a task's completions:
// FNV-1a (32 bits) of the task id's bytes, mod n. With n <= 1 it returns 0.
func PartitionOf(taskID string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(taskID))
	return int(h.Sum32() % uint32(n))
}

// Members returns the key of the sorted set in which the live consumers of
// group announce themselves.
func Members(stream, group string) string {
	return stream + ":members:" + group
}

// Owner returns the key naming the consumer of group that owns partition i
// of n of stream. It is in the partition's slot.
func Owner(stream string, i, n int, group string) string {
	return PartitionStream(stream, i, n) + ":owner:" + group
}

// Topology says where a client's keys live, and so which keys one script may
// touch.
type Topology int

const (
	// SingleNode: every key is on one node (a *redis.Client, also a Sentinel
	// failover client, or a *redis.Conn); a script may touch any keys.
	SingleNode Topology = iota
	// Cluster: keys are spread over slots (a *redis.ClusterClient); a script
	// may touch keys of one slot only.
	Cluster
	// Sharded: keys are spread by hash tag (a *redis.Ring, or a client of
	// unknown kind, for which this is the safe assumption); a script may
	// touch keys that share a hash tag.
	Sharded
)

// TopologyOf returns the topology of client. It goes by the methods the
// client has, not its concrete type, so that a wrapper embedding a
// *redis.Client or *redis.ClusterClient is seen as what it wraps.
func TopologyOf(client any) Topology {
	switch client.(type) {
	case interface{ Conn() *redis.Conn }, *redis.Conn:
		return SingleNode
	case interface {
		MasterForKey(ctx context.Context, key string) (*redis.Client, error)
	}:
		return Cluster
	}
	return Sharded
}

// SameNode reports whether one script may touch keys a and b.
func (t Topology) SameNode(a, b string) bool {
	switch t {
	case SingleNode:
		return true
	case Cluster:
		return Slot(a) == Slot(b)
	}
	return HashTag(a) == HashTag(b)
}

// String names the topology.
func (t Topology) String() string {
	switch t {
	case SingleNode:
		return "single node"
	case Cluster:
		return "cluster"
	}
	return "sharded"
}
