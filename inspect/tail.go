package inspect

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/keys"
)

// tailBlock is the BLOCK of each XREAD [Inspector.Tail] issues. go-redis
// does not interrupt a blocked read when its context ends, so this bounds
// how long Tail takes to return after that.
const tailBlock = time.Second

// Entry is an entry of the stream.
type Entry struct {
	// ID is the entry's id.
	ID string
	// Ref names the entry: ID, or of a partitioned stream "PARTITION/ID".
	Ref string
	// Stream is the key of the stream the entry is in: the stream, or of a
	// partitioned stream the partition's key.
	Stream string
	// Partition is the index of the partition the entry is in; 0 of a
	// stream that is not partitioned.
	Partition int
	// Fields are the entry's fields.
	Fields map[string]string
	// Message is the decoded message, or nil when the entry holds none that
	// can be decoded; DecodeErr then says why.
	Message *completion.Message
	// DecodeErr is the reason Message is nil.
	DecodeErr error
}

// newEntry returns the stream entry m of partition part as an [Entry].
func (in *Inspector) newEntry(part int, m redis.XMessage) Entry {
	e := Entry{ID: m.ID, Ref: in.ref(part, m.ID), Stream: in.parts[part], Partition: part, Fields: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		e.Fields[k] = fmt.Sprint(v)
	}
	e.Message, e.DecodeErr = decodeFields(e.Fields)
	return e
}

// Entry returns the stream entry ref names (a full id, or of a partitioned
// stream "PARTITION/ID"), and false when the stream does not hold it (any
// more: it may have been trimmed).
func (in *Inspector) Entry(ctx context.Context, ref string) (Entry, bool, error) {
	pos, err := in.parsePosition(ref, false)
	if err != nil {
		return Entry{}, false, fmt.Errorf("inspect: entry: %w", err)
	}
	if !pos.full {
		return Entry{}, false, fmt.Errorf("inspect: entry: %q is not a full id: give ms-seq, e.g. %d-0", ref, pos.id.ms)
	}
	part := max(pos.part, 0)
	if pos.part < 0 && in.partitioned() {
		return Entry{}, false, fmt.Errorf("inspect: entry: %q names no partition: give PARTITION/ID", ref)
	}
	id := pos.id.String()
	msgs, err := in.client.XRangeN(ctx, in.parts[part], id, id, 1).Result()
	if err != nil {
		return Entry{}, false, fmt.Errorf("inspect: read entry %s of %q: %w", id, in.parts[part], err)
	}
	if len(msgs) == 0 {
		return Entry{}, false, nil
	}
	return in.newEntry(part, msgs[0]), true, nil
}

// PublishTest publishes msg with completion.Publish (and its options) to the
// stream, of a partitioned stream with completion.WithPartitions (overriding
// any in opts) to the partition of msg's task id ([Inspector.PartitionFor]),
// and returns the new entry's id: a way to check, end to end, that
// consumers are alive.
func (in *Inspector) PublishTest(ctx context.Context, msg completion.Message, opts ...completion.PublishOption) (string, error) {
	if in.partitioned() {
		opts = append(opts[:len(opts):len(opts)], completion.WithPartitions(len(in.parts)))
	}
	return completion.Publish(ctx, in.client, in.cfg.Stream, msg, opts...)
}

// Tail follows the stream with XREAD BLOCK and calls fn with each entry
// added after from, in order, until ctx ends; then it returns nil. from ""
// or "$" means entries added from now on; "0" means every entry in the
// stream, then new ones; an id (or of a partitioned stream "PARTITION/ID")
// means the entries after it. If fn returns an error, Tail stops and returns
// it.
//
// Tail reads without a consumer group, so the consumers do not notice it,
// and it sees every entry, whichever consumer handles it. It returns within
// about a second of ctx ending.
//
// Of a partitioned stream it follows every partition: entries of one
// partition come in order, those of different partitions interleaved as
// they are read. fn is called from Tail's goroutine, one entry at a time. On
// a single node one XREAD reads all partitions; otherwise (a cluster, where
// a command must not touch two partitions) each partition is read by a
// blocking XREAD of its own, which holds a connection while it waits: give a
// *redis.ClusterClient a PoolSize above the number of partitions per
// master.
func (in *Inspector) Tail(ctx context.Context, from string, fn func(Entry) error) error {
	froms, err := in.tailStarts(ctx, from)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if len(in.parts) == 1 || in.topo == keys.SingleNode {
		return in.tailOneRead(ctx, froms, fn)
	}
	return in.tailReaders(ctx, froms, fn)
}

// tailStarts returns, for each partition, the id XREAD starts after.
func (in *Inspector) tailStarts(ctx context.Context, from string) ([]string, error) {
	froms := make([]string, len(in.parts))
	switch from {
	case "", "$":
		// Start after the current last entry, rather than sending "$" with
		// every read, which would skip what arrives between reads.
		err := fanOut(ctx, len(in.parts), func(ctx context.Context, i int) error {
			last, err := in.client.XRevRangeN(ctx, in.parts[i], "+", "-", 1).Result()
			if err != nil {
				return fmt.Errorf("inspect: tail: read the last entry of %q: %w", in.parts[i], err)
			}
			froms[i] = "0-0"
			if len(last) > 0 {
				froms[i] = last[0].ID
			}
			return nil
		})
		return froms, err
	case "0":
		for i := range froms {
			froms[i] = "0-0"
		}
		return froms, nil
	}
	pos, err := in.parsePosition(from, false)
	if err != nil {
		return nil, fmt.Errorf("inspect: tail: from %w", err)
	}
	for i := range froms {
		// XREAD returns what follows its id: give it the id before the
		// first one wanted.
		first, ok := pos.firstAfter(i, false)
		switch before, hasBefore := first.prev(); {
		case !ok: // nothing follows the largest id
			froms[i] = pos.id.String()
		case hasBefore:
			froms[i] = before.String()
		default:
			froms[i] = "0-0"
		}
	}
	return froms, nil
}

// tailOneRead follows every partition with one XREAD over all their keys:
// on a single node, or of a stream that is not partitioned.
func (in *Inspector) tailOneRead(ctx context.Context, froms []string, fn func(Entry) error) error {
	n := len(in.parts)
	streams := make([]string, 2*n)
	copy(streams, in.parts)
	for ctx.Err() == nil {
		copy(streams[n:], froms)
		res, err := in.client.XRead(ctx, &redis.XReadArgs{Streams: streams, Count: 100, Block: tailBlock}).Result()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return fmt.Errorf("inspect: tail stream %q: %w", in.cfg.Stream, err)
		}
		for _, s := range res {
			i, ok := in.partIndex[s.Stream]
			if !ok {
				continue
			}
			for _, m := range s.Messages {
				if err := fn(in.newEntry(i, m)); err != nil {
					return err
				}
				froms[i] = m.ID
			}
		}
	}
	return nil
}

// tailReaders follows every partition with a reader of its own (one
// blocking XREAD per partition, as a cluster requires) and hands their
// entries to fn from this goroutine.
func (in *Inspector) tailReaders(ctx context.Context, froms []string, fn func(Entry) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	entries := make(chan Entry)
	errs := make(chan error, len(in.parts))
	var wg sync.WaitGroup
	for i := range in.parts {
		wg.Go(func() {
			one := &Inspector{client: in.client, cfg: in.cfg, topo: in.topo, parts: in.parts[i : i+1],
				partIndex: map[string]int{in.parts[i]: 0}}
			err := one.tailOneRead(ctx, froms[i:i+1], func(e Entry) error {
				e = in.newEntryAt(i, e)
				select {
				case entries <- e:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var err error
loop:
	for {
		select {
		case e := <-entries:
			if err = fn(e); err != nil {
				break loop
			}
		case err = <-errs:
			break loop
		case <-done: // every reader ended: ctx ended, or a reader failed
			select {
			case err = <-errs:
			default:
			}
			break loop
		}
	}
	cancel()
	<-done
	return err
}

// newEntryAt renames an entry read by a one-partition reader as an entry of
// partition part.
func (in *Inspector) newEntryAt(part int, e Entry) Entry {
	e.Partition, e.Stream, e.Ref = part, in.parts[part], in.ref(part, e.ID)
	return e
}
