package taskstream

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// Defaults applied by [New] to zero [Config] fields: the Python service's
// layout.
const (
	DefaultPrefix        = "chat:stream:"
	DefaultChannelPrefix = "chat:task:pubsub:"
	DefaultMaxLen        = 10000
	DefaultTTL           = time.Hour
)

// FinishEvent is the event that ends a task's stream, as the AI SDK UI
// stream protocol writes it.
const FinishEvent = `{"type":"finish"}`

// dataField is the entry field holding an event's JSON.
const dataField = "data"

// Client is the set of go-redis methods the package uses. *redis.Client
// (also a Sentinel client from redis.NewFailoverClient), *redis.ClusterClient
// and redis.UniversalClient satisfy it. The package never closes it.
type Client interface {
	redis.Scripter
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	XRangeN(ctx context.Context, stream, start, stop string, count int64) *redis.XMessageSliceCmd
	XRevRangeN(ctx context.Context, stream, start, stop string, count int64) *redis.XMessageSliceCmd
}

// Config configures [Streams]. The zero value is the Python service's
// layout: stream "chat:stream:<task id>", channel
// "chat:task:pubsub:<task id>", MAXLEN ~ 10000, a TTL of one hour refreshed
// on every write. Task ids are appended to the prefixes as they are (no hash
// tag: the keys of one task may live on different cluster nodes).
type Config struct {
	// Prefix is prepended to a task id to name the task's stream.
	// Default: DefaultPrefix ("chat:stream:").
	Prefix string

	// ChannelPrefix is prepended to a task id to name the pub/sub channel
	// on which every write to the task's stream is announced.
	// Default: DefaultChannelPrefix ("chat:task:pubsub:").
	ChannelPrefix string

	// MaxLen trims each task's stream to about this many entries
	// (XADD MAXLEN ~). It must not be negative. Default: DefaultMaxLen
	// (10000, as the Python service).
	MaxLen int64

	// TTL is the time to live a task's stream gets on every write: it
	// expires TTL after its last event. It must not be negative, and if
	// set, at least a millisecond. Default: DefaultTTL (one hour, the task
	// registry's).
	TTL time.Duration
}

// Streams reads and writes task streams. It is safe for concurrent use.
type Streams struct {
	client Client
	cfg    Config
	topo   keys.Topology
}

// New returns task streams on client. Zero fields of cfg take their
// defaults. It returns an error wrapping [completion.ErrInvalidConfig],
// naming the field, for an invalid field, and one wrapping
// [completion.ErrNilArgument] for a nil client. It does not contact Redis.
func New(client Client, cfg Config) (*Streams, error) {
	if isNil(client) {
		return nil, fmt.Errorf("%w: taskstream.New: client", completion.ErrNilArgument)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.ChannelPrefix == "" {
		cfg.ChannelPrefix = DefaultChannelPrefix
	}
	switch {
	case cfg.MaxLen == 0:
		cfg.MaxLen = DefaultMaxLen
	case cfg.MaxLen < 0:
		return nil, fmt.Errorf("%w: Config.MaxLen is %d; it must not be negative (zero means the default, %d)", completion.ErrInvalidConfig, cfg.MaxLen, DefaultMaxLen)
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < 0:
		return nil, fmt.Errorf("%w: Config.TTL is %v; it must not be negative (zero means the default, %v)", completion.ErrInvalidConfig, cfg.TTL, DefaultTTL)
	case cfg.TTL < time.Millisecond:
		return nil, fmt.Errorf("%w: Config.TTL is %v; Redis expiries count whole milliseconds", completion.ErrInvalidConfig, cfg.TTL)
	}
	return &Streams{client: client, cfg: cfg, topo: keys.TopologyOf(client)}, nil
}

// isNil reports whether v is nil or a typed nil pointer, map, func, ...
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan:
		return r.IsNil()
	}
	return false
}

// Config returns the configuration with defaults filled in.
func (s *Streams) Config() Config { return s.cfg }

// Key returns the key of task taskID's stream.
func (s *Streams) Key(taskID string) string { return s.cfg.Prefix + taskID }

// Channel returns the pub/sub channel of task taskID.
func (s *Streams) Channel(taskID string) string { return s.cfg.ChannelPrefix + taskID }

// Append adds event to task taskID's stream as one entry (field "data"),
// trims the stream (MAXLEN ~), refreshes its TTL and publishes the event on
// the task's channel, in one script: a written event is always announced.
// It returns the entry's id.
//
// The event is opaque: any JSON value, stored as given (an AI SDK UI stream
// part such as {"type":"text-delta",...}, typically). Invalid JSON or UTF-8
// is refused with an error wrapping [ErrInvalidEvent], an invalid task id
// with one wrapping [ErrInvalidTaskID], before anything is sent. Redis
// errors are returned wrapped; Append does not retry (a retry after a
// timeout may append the event twice).
func (s *Streams) Append(ctx context.Context, taskID string, event json.RawMessage) (string, error) {
	if err := checkTaskID(taskID); err != nil {
		return "", err
	}
	if !utf8.Valid(event) || !json.Valid(event) {
		return "", fmt.Errorf("%w: not valid JSON (task %q)", ErrInvalidEvent, taskID)
	}
	ids, err := scripts.TaskAppend.Run(ctx, s.client, []string{s.Key(taskID)},
		s.cfg.MaxLen, s.cfg.TTL.Milliseconds(), s.Channel(taskID), []byte(event)).StringSlice()
	if err != nil {
		return "", fmt.Errorf("taskstream: append to task %q: %w", taskID, err)
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("taskstream: append to task %q: the script returned %d ids", taskID, len(ids))
	}
	return ids[0], nil
}

// Finish appends the finish event ({"type":"finish"}) to task taskID's
// stream; see [Streams.Append]. Subscriptions end after it.
func (s *Streams) Finish(ctx context.Context, taskID string) (string, error) {
	return s.Append(ctx, taskID, json.RawMessage(FinishEvent))
}

// DefaultReadLimit is the most events [Streams.Read] returns when count is
// not positive.
const DefaultReadLimit = 1000

// Read returns up to count events of task taskID's stream that come after
// the entry afterID ("0-0" or "" for the start), oldest first; count <= 0
// means DefaultReadLimit. A stream that does not exist reads as empty, and
// is not created. It returns an error wrapping [ErrInvalidTaskID] or
// [ErrInvalidID] for bad input, before anything is sent.
func (s *Streams) Read(ctx context.Context, taskID, afterID string, count int64) ([]Event, error) {
	if err := checkTaskID(taskID); err != nil {
		return nil, err
	}
	after, err := parseID(afterID)
	if err != nil {
		return nil, err
	}
	if count <= 0 {
		count = DefaultReadLimit
	}
	msgs, err := s.client.XRangeN(ctx, s.Key(taskID), "("+after.String(), "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("taskstream: read task %q: %w", taskID, err)
	}
	return eventsOf(msgs), nil
}

// lastEvents returns up to n events of the task's stream at or before id
// "upTo" ("+" for the end), newest first.
func (s *Streams) lastEvents(ctx context.Context, taskID, upTo string, n int64) ([]Event, error) {
	msgs, err := s.client.XRevRangeN(ctx, s.Key(taskID), upTo, "-", n).Result()
	if err != nil {
		return nil, fmt.Errorf("taskstream: read task %q: %w", taskID, err)
	}
	return eventsOf(msgs), nil
}

// eventsOf converts stream entries to events. An entry without a string
// "data" field (one trimmed while it was read, or written by someone else)
// becomes an event with empty Data, which subscribers skip.
func eventsOf(msgs []redis.XMessage) []Event {
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		id, err := parseID(m.ID)
		if err != nil {
			continue
		}
		out = append(out, eventOf(id, m))
	}
	return out
}

func eventOf(id streamID, m redis.XMessage) Event {
	data, _ := m.Values[dataField].(string)
	op, _ := m.Values[scripts.TaskStreamOperationField].(string)
	return Event{ID: m.ID, Data: json.RawMessage(data), OperationID: op, id: id}
}
