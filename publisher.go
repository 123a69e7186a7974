package completion

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// XAdder is the one go-redis command [Publish] needs. *redis.Client,
// *redis.ClusterClient, *redis.Ring, redis.UniversalClient, redis.Pipeliner
// and *redis.Conn all satisfy it.
type XAdder interface {
	XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd
}

// PublishOption changes how [Publish] writes. Most programs need none.
type PublishOption func(*publishOptions)

type publishOptions struct {
	maxLen     int64
	partitions int
}

// WithMaxLen trims the stream to about n entries (XADD MAXLEN ~ n) as the
// message is added. n = 0 turns trimming off. Without this option Publish
// trims to DefaultMaxLen, as the Python producer does.
//
// Trimming also drops entries that no consumer group has read yet: size n
// for the slowest group, or a backlog beyond n is lost.
func WithMaxLen(n int64) PublishOption {
	return func(o *publishOptions) { o.maxLen = n }
}

// Publish appends msg to stream in the wire format the Python producer
// writes (one field, "data", holding the JSON message) and returns the new
// entry's id. An empty stream means DefaultStream.
//
// An invalid message (see [Message.Validate]) is refused with an error
// wrapping [ErrMalformed] before anything is written. Errors from Redis
// are returned as they are; Publish does not retry, because a retry after a
// timeout may add the message twice, which the caller may or may not want.
func Publish(ctx context.Context, rdb XAdder, stream string, msg Message, opts ...PublishOption) (string, error) {
	o := publishOptions{maxLen: DefaultMaxLen}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxLen < 0 {
		return "", fmt.Errorf("%w: WithMaxLen(%d): the length must be 0 (no trimming) or positive", ErrInvalidConfig, o.maxLen)
	}
	if stream == "" {
		stream = DefaultStream
	}
	if o.partitions < 0 {
		return "", fmt.Errorf("%w: WithPartitions(%d): the count must be positive", ErrInvalidConfig, o.partitions)
	}
	if o.partitions > 1 {
		if o.partitions > MaxPartitions || hasHashTag(stream) {
			return "", fmt.Errorf("%w: WithPartitions(%d) on stream %q: want at most %d partitions of a stream without a {hash tag}", ErrInvalidConfig, o.partitions, stream, MaxPartitions)
		}
		stream = PartitionStream(stream, partitionOf(msg.TaskID, o.partitions), o.partitions)
	}
	// A fresh buffer per call: rdb may be a pipeline that sends the
	// command only at Exec, long after Publish returned.
	data, err := msg.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("%w (nothing was published)", err)
	}
	args := redis.XAddArgs{
		Stream: stream,
		Values: []any{DataField, data},
	}
	if o.maxLen > 0 {
		args.MaxLen = o.maxLen
		args.Approx = true
	}
	id, err := rdb.XAdd(ctx, &args).Result()
	if err != nil {
		return "", fmt.Errorf("completion: publish operation %q to stream %q: %w", msg.OperationID, stream, err)
	}
	return id, nil
}
