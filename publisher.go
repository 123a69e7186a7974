package completion

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/wire"
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
	fields     []entryField // extra entry fields, in the order first given
}

// entryField is a field [WithField] adds to the entry next to DataField.
type entryField struct{ name, value string }

// WithMaxLen trims the stream to about n entries (XADD MAXLEN ~ n) as the
// message is added. n = 0 turns trimming off. Without this option Publish
// trims to DefaultMaxLen, as the Python producer does.
//
// Trimming also drops entries that no consumer group has read yet: size n
// for the slowest group, or a backlog beyond n is lost.
func WithMaxLen(n int64) PublishOption {
	return func(o *publishOptions) { o.maxLen = n }
}

// WithField adds a field called name, holding value, to the entry next to
// [DataField]: metadata that travels with the message without changing its
// JSON, which the Python service shares (a W3C traceparent, a tenant, a
// schema version). The handler reads it with [Completion.Field]; dead
// letters keep it, and a redrive puts it back (see [Inspector.Redrive]).
// Readers that take "data" by name, as this package's consumer does, ignore
// the other fields.
//
// WithField may be given several times; a later value for the same name
// replaces the earlier one, so that an entry never holds a name twice.
//
// Some names are refused, with an error from [Publish] wrapping
// [ErrMalformed], because the entry format already gives them a meaning:
// the empty name, [DataField], and names starting with "dl_" (dead letters
// add dl_ fields of their own; see [DeadLetterReasonField]). Names and values
// must be valid UTF-8: a reader that decodes every field as text (redis-py
// with decode_responses, say) would otherwise fail on the whole entry.
//
// The consumer's size check, Config.MaxPayloadBytes, counts the extra
// fields' names and values with the "data" field: keep them small.
func WithField(name, value string) PublishOption {
	return func(o *publishOptions) {
		for i := range o.fields {
			if o.fields[i].name == name {
				o.fields[i].value = value
				return
			}
		}
		o.fields = append(o.fields, entryField{name: name, value: value})
	}
}

// checkField reports why f cannot be written next to DataField, if it
// cannot. The value is never quoted in the error: it may be large or
// private.
func checkField(f entryField) error {
	var problem string
	switch {
	case f.name == "":
		problem = "the name must not be empty"
	case f.name == DataField:
		problem = "the name is reserved for the JSON message"
	case strings.HasPrefix(f.name, wire.DeadLetterFieldPrefix):
		problem = `names starting with "` + wire.DeadLetterFieldPrefix + `" are reserved for dead-letter metadata`
	case !utf8.ValidString(f.name):
		problem = "the name is not valid UTF-8"
	case !utf8.ValidString(f.value):
		problem = "the value is not valid UTF-8"
	default:
		return nil
	}
	return fmt.Errorf("%w: WithField(%q): %s (nothing was published)", ErrMalformed, f.name, problem)
}

// Publish appends msg to stream in the wire format the Python producer
// writes (one field, "data", holding the JSON message, followed by the
// fields given with [WithField], if any) and returns the new entry's id.
// An empty stream is refused (a producer that forgot the name would write
// to a shared key), as is a nil rdb (an error wrapping [ErrNilArgument]).
//
// An invalid message (see [Message.Validate]) or field (see [WithField]) is
// refused with an error wrapping [ErrMalformed] before anything is written.
// Errors from Redis are returned as they are; Publish does not retry,
// because a retry after a timeout may add the message twice, which the
// caller may or may not want.
func Publish(ctx context.Context, rdb XAdder, stream string, msg Message, opts ...PublishOption) (string, error) {
	o := publishOptions{maxLen: DefaultMaxLen}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxLen < 0 {
		return "", fmt.Errorf("%w: WithMaxLen(%d): the length must be 0 (no trimming) or positive", ErrInvalidConfig, o.maxLen)
	}
	if isNil(rdb) {
		return "", fmt.Errorf("%w: Publish: the Redis client is nil", ErrNilArgument)
	}
	if stream == "" {
		return "", fmt.Errorf("%w: Publish: the stream name is empty; name it (the Python service's is %q)", ErrInvalidConfig, DefaultStream)
	}
	if o.partitions < 0 {
		return "", fmt.Errorf("%w: WithPartitions(%d): the count must be positive", ErrInvalidConfig, o.partitions)
	}
	if o.partitions > 1 {
		if err := keys.CheckPartitions(stream, o.partitions); err != nil {
			return "", fmt.Errorf("%w: WithPartitions(%d) on stream %q: %v", ErrInvalidConfig, o.partitions, stream, err)
		}
		stream = PartitionStream(stream, keys.PartitionOf(msg.TaskID, o.partitions), o.partitions)
	}
	for _, f := range o.fields {
		if err := checkField(f); err != nil {
			return "", err
		}
	}
	// A fresh buffer per call: rdb may be a pipeline that sends the
	// command only at Exec, long after Publish returned.
	data, err := msg.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("%w (nothing was published)", err)
	}
	// "data" first, as the Python producer writes it; a slice, not a map,
	// so that the fields keep their order on the wire.
	values := make([]any, 0, 2+2*len(o.fields))
	values = append(values, DataField, data)
	for _, f := range o.fields {
		values = append(values, f.name, f.value)
	}
	args := redis.XAddArgs{
		Stream: stream,
		Values: values,
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
