package completion

import (
	"github.com/streamrelay/completion/internal/keys"
)

// MaxPartitions is the most partitions a stream can be split into.
const MaxPartitions = keys.MaxPartitions

// PartitionFor returns the partition (0 <= p < n) that the completions of
// task taskID go to when a stream is split into n partitions: the 32-bit
// FNV-1a hash of the task id's bytes (UTF-8, as given), modulo n. With
// n <= 1 it returns 0. Producers in other languages must compute the same;
// testdata/partitions.json holds vectors, and the README shows it in Python.
func PartitionFor(taskID string, n int) int { return keys.PartitionOf(taskID, n) }

// PartitionStream returns the key of partition i (0 <= i < n) of a stream
// split into n partitions: stream + ":{" + tag + "}", where tag is "i.k"
// (decimal) for the smallest k >= 0 whose Redis Cluster slot (CRC16-XMODEM
// of the tag, mod 16384) lies in [i*16384/n, (i+1)*16384/n), the i-th n-th
// of the slot space. On a cluster whose masters own equal slot ranges, the
// partitions thus spread evenly over the masters. With n = 1 it returns
// stream itself.
//
// The stream name must not carry a hash tag of its own (it would pin every
// partition to one slot); [NewConsumer] refuses such a Config.
func PartitionStream(stream string, i, n int) string {
	return keys.PartitionStream(stream, i, n)
}

// WithPartitions publishes to one of n partitions of the stream, the one
// PartitionFor picks from the message's task id, so that one task's
// completions stay in order in one partition. Consumers must use the same
// Config.Partitions. n <= 1 publishes to the stream itself.
func WithPartitions(n int) PublishOption {
	return func(o *publishOptions) { o.partitions = n }
}
