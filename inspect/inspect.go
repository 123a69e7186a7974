// Package inspect looks at a completion stream, its consumer groups and its
// dead letters, and repairs them: it moves dead letters back to the stream
// (redrive) or deletes them (purge). It is the library behind the completion
// command (cmd/completion) and the dashboard.
//
// An [Inspector] works on a stream split into N >= 1 partitions, as the
// consumers' completion.Config.Partitions splits it; an unpartitioned stream
// is the case N = 1. Every Redis command touches the keys of one partition
// only, so it works on Redis Cluster, where partitions live on different
// masters. Apart from the redrive, purge and publish methods it only reads:
// it never joins a consumer group, so it does not disturb the consumers.
//
//	in, err := inspect.New(rdb, inspect.Config{Stream: "chat:completions"})
//	info, err := in.Info(ctx)
//	page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Reason: completion.ReasonTaskNotFound})
//	moved, err := in.Redrive(ctx, page.DeadLetters[0].Ref)
package inspect

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
)

// DefaultCount is how many entries [Inspector.Pending] and
// [Inspector.DeadLetters] return when asked for count 0.
const DefaultCount = 100

// Errors of the repairs. Test for them with [errors.Is].
var (
	// ErrAmbiguousID is returned (wrapped) by [Inspector.Redrive] and
	// [Inspector.Purge] of a partitioned stream when a dead-letter id given
	// without its partition is in the dead-letter streams of several
	// partitions. Nothing is moved or deleted then; the error names the
	// candidates as "PARTITION/ID": give the one meant.
	ErrAmbiguousID = errors.New("inspect: dead-letter id is in several partitions")

	// ErrNotRedrivable is returned (wrapped) when a dead letter holds no
	// original fields to put back: one of an oversize entry, which holds only
	// an excerpt (its dl_excerpt field), or one written by
	// something else. [Inspector.Redrive] stops at it; the range redrives
	// skip such dead letters, move the rest and then return this error with
	// the count.
	ErrNotRedrivable = errors.New("inspect: dead letter cannot be redriven")
)

// Client is the set of go-redis commands an [Inspector] uses.
// *redis.Client, *redis.ClusterClient, *redis.Ring and redis.UniversalClient
// satisfy it. The inspector never closes it.
type Client interface {
	redis.Scripter
	XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd
	XDel(ctx context.Context, stream string, ids ...string) *redis.IntCmd
	XLen(ctx context.Context, stream string) *redis.IntCmd
	XRangeN(ctx context.Context, stream, start, stop string, count int64) *redis.XMessageSliceCmd
	XRevRangeN(ctx context.Context, stream, start, stop string, count int64) *redis.XMessageSliceCmd
	XRead(ctx context.Context, a *redis.XReadArgs) *redis.XStreamSliceCmd
	XInfoGroups(ctx context.Context, key string) *redis.XInfoGroupsCmd
	XInfoConsumers(ctx context.Context, key, group string) *redis.XInfoConsumersCmd
	XPendingExt(ctx context.Context, a *redis.XPendingExtArgs) *redis.XPendingExtCmd
	XTrimMaxLen(ctx context.Context, key string, maxLen int64) *redis.IntCmd
	Get(ctx context.Context, key string) *redis.StringCmd
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// Config names the keys an [Inspector] looks at. A zero field means its
// default, given at the end of each field's comment; the defaults are those
// of completion.Config, so an Inspector of the zero Config looks at what a
// Consumer of the zero completion.Config uses.
type Config struct {
	// Stream is the completion stream. It must not be empty.
	Stream string
	// Group is the consumer group [Inspector.Pending] looks at when it is
	// given none, and whose partition owners [Inspector.Info] reports.
	// Default completion.DefaultGroup.
	Group string
	// DeadLetterStream is the stream consumers move failed entries to.
	// Default: completion.DeadLetterStreamFor of each partition's key (of
	// the stream itself when it is not partitioned), as for a Consumer.
	// Set it only when the consumers set completion.Config.DeadLetterStream,
	// which makes every partition write its dead letters to that one stream.
	DeadLetterStream string
	// Partitions is the number of partitions the stream is split into, as
	// the consumers' completion.Config.Partitions and the producers'
	// completion.WithPartitions split it. With more than 1, dead letters and
	// entries are named "PARTITION/ID" (see [DeadLetter.Ref]). As for a
	// Consumer it must be at most completion.MaxPartitions, and a
	// partitioned Stream must not carry a {hash tag}. Default 1.
	Partitions int
}

// Inspector looks at a completion stream and repairs it; see the package
// documentation. It is safe for concurrent use, also by several processes
// at once: see [Inspector.Redrive] for what that means for redrives.
type Inspector struct {
	client Client
	cfg    Config
	topo   keys.Topology

	parts     []string       // each partition's key, by index
	partIndex map[string]int // partition key -> index
	dead      []deadSource   // one per partition, by index, or one shared
}

// deadSource is a dead-letter stream.
type deadSource struct {
	key  string
	part int // the partition whose dead letters it holds; -1: shared by all (Partitions > 1)
}

// New returns an Inspector of the keys cfg names, with defaults filled in.
// It returns an error wrapping completion.ErrInvalidConfig when Stream is
// empty, when a dead-letter stream would be a partition's key, or when
// Partitions is one a Consumer would refuse, and one wrapping
// completion.ErrNilArgument when client is nil.
func New(client Client, cfg Config) (*Inspector, error) {
	if isNil(client) {
		return nil, fmt.Errorf("%w: inspect.New: the Redis client is nil", completion.ErrNilArgument)
	}
	if cfg.Stream == "" {
		return nil, fmt.Errorf("%w: inspect.Config.Stream is empty; name the stream to inspect", completion.ErrInvalidConfig)
	}
	if cfg.Group == "" {
		cfg.Group = completion.DefaultGroup
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 1
	}
	// The Consumer's rules for Partitions.
	if err := keys.CheckPartitions(cfg.Stream, cfg.Partitions); err != nil {
		return nil, fmt.Errorf("%w: inspect.Config.Partitions is %d; %v", completion.ErrInvalidConfig, cfg.Partitions, err)
	}
	n := cfg.Partitions
	in := &Inspector{
		client:    client,
		cfg:       cfg,
		topo:      keys.TopologyOf(client),
		parts:     make([]string, n),
		partIndex: make(map[string]int, n),
	}
	for i := range n {
		key := keys.PartitionStream(cfg.Stream, i, n)
		in.parts[i] = key
		in.partIndex[key] = i
		if cfg.DeadLetterStream == key {
			return nil, fmt.Errorf("%w: DeadLetterStream is %q, the key of partition %d of %d; it must differ from every partition's key", completion.ErrInvalidConfig, key, i, n)
		}
		if cfg.DeadLetterStream == "" {
			in.dead = append(in.dead, deadSource{key: keys.DeadLetterStream(key), part: i})
		}
	}
	if cfg.DeadLetterStream != "" {
		part := 0
		if n > 1 {
			part = -1
		}
		in.dead = []deadSource{{key: cfg.DeadLetterStream, part: part}}
	}
	return in, nil
}

// isNil reports whether c is nil, or a typed nil pointer in an interface.
func isNil(c Client) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// Config returns the inspector's configuration, defaults filled in.
func (in *Inspector) Config() Config { return in.cfg }

// PartitionFor returns the partition that completion.Publish with
// completion.WithPartitions (and so [Inspector.PublishTest]) puts the
// completions of task taskID in: its index and its key. Of a stream that is
// not partitioned it returns 0 and the stream.
func (in *Inspector) PartitionFor(taskID string) (int, string) {
	i := keys.PartitionOf(taskID, len(in.parts))
	return i, in.parts[i]
}

// DeadLetterStreams returns the keys of the dead-letter streams: one per
// partition, by partition index, or the one they share.
func (in *Inspector) DeadLetterStreams() []string {
	out := make([]string, len(in.dead))
	for i, d := range in.dead {
		out[i] = d.key
	}
	return out
}

// partitioned reports whether the stream has more than one partition.
func (in *Inspector) partitioned() bool { return len(in.parts) > 1 }

// fanOutLimit bounds how many partitions an Inspector reads at once.
const fanOutLimit = 8

// fanOut calls f(ctx, i) for each i from 0 to n-1, at most fanOutLimit at a
// time, and returns once every call has returned: nil, or the first error.
// After an error the other calls' context is cancelled and calls not yet
// started are skipped. (errgroup.Group with SetLimit, without a dependency.)
func fanOut(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 1 {
		return f(ctx, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, fanOutLimit)
	for i := range n {
		sem <- struct{}{}
		if ctx.Err() != nil {
			mu.Lock()
			if first == nil {
				first = ctx.Err() // the caller's context ended before every call ran
			}
			mu.Unlock()
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}
