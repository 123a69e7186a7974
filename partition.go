package completion

import (
	"github.com/streamrelay/completion/internal/keys"
)

// MaxPartitions is the most partitions a stream can be split into.
const MaxPartitions = keys.MaxPartitions

// PartitionStream returns the key of partition i (0 <= i < n) of a stream
// split into n partitions: the stream's name followed by a hash tag chosen
// so that partition i falls in the i-th n-th of the Redis Cluster slot
// space. On a cluster whose masters own equal slot ranges, the partitions
// thus spread evenly over the masters. With n = 1 it returns stream itself.
//
// The stream name must not carry a hash tag of its own (it would pin every
// partition to one slot); [NewConsumer] refuses such a Config.
func PartitionStream(stream string, i, n int) string {
	return keys.PartitionStream(stream, i, n)
}

// WithPartitions publishes to one of n partitions of the stream, picked from
// the message's task id, so that one task's completions stay in order in
// one partition. Consumers must use the same Config.Partitions. n <= 1
// publishes to the stream itself.
func WithPartitions(n int) PublishOption {
	return func(o *publishOptions) { o.partitions = n }
}

// partitionConfigs returns one Config per partition the consumer may read:
// the consumer's, with the partition's stream and dead-letter stream. (Each
// partition's run keeps the whole Concurrency; one semaphore shared by the
// runs bounds the handlers, see ownership.go.)
func (c *Consumer) partitionConfigs() []Config {
	n := c.cfg.Partitions
	if n <= 1 {
		return []Config{c.cfg}
	}
	cfgs := make([]Config, n)
	for i := range cfgs {
		cfg := c.cfg
		cfg.Stream = PartitionStream(c.cfg.Stream, i, n)
		if !c.explicitDeadLetter {
			cfg.DeadLetterStream = DeadLetterStreamFor(cfg.Stream)
		}
		cfgs[i] = cfg
	}
	return cfgs
}
