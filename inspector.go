package completion

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// DefaultInspectCount is how many entries [Inspector.Pending] and
// [Inspector.DeadLetters] return when asked for count 0.
const DefaultInspectCount = 100

// redrivePage is how many dead letters [Inspector.RedriveRange] reads at a
// time.
const redrivePage = 100

// tailBlock is the BLOCK of each XREAD [Inspector.Tail] issues. go-redis
// does not interrupt a blocked read when its context ends, so this bounds
// how long Tail takes to return after that.
const tailBlock = time.Second

// InspectorClient is the set of go-redis commands an [Inspector] uses.
// *redis.Client, *redis.ClusterClient, *redis.Ring and redis.UniversalClient
// satisfy it. The inspector never closes it.
type InspectorClient interface {
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
}

// InspectorConfig names the keys an [Inspector] looks at. A zero field means
// its default, given at the end of each field's comment; the defaults are
// those of [Config], so an Inspector built from the zero InspectorConfig
// looks at what a Consumer built from the zero Config uses.
type InspectorConfig struct {
	// Stream is the completion stream. Default DefaultStream.
	Stream string
	// Group is the consumer group [Inspector.Pending] looks at when it is
	// given no group. Default DefaultGroup.
	Group string
	// DeadLetterStream is the stream consumers move failed entries to.
	// Default DeadLetterStreamFor(Stream), as for a Consumer. Of a
	// partitioned stream (Partitions > 1) the default is the partitions' own
	// dead-letter streams, DeadLetterStreamFor of each partition's key (and
	// [Inspector.Config] leaves the field empty); set it only when the
	// consumers set Config.DeadLetterStream, which makes every partition
	// write its dead letters to that one stream.
	DeadLetterStream string
	// Partitions is the number of partitions the stream is split into, as
	// the consumers' Config.Partitions and the producers' WithPartitions
	// split it. With more than 1, the Inspector works on all partitions at
	// once: [Inspector.Info] sums them up and lists each, [Inspector.Pending],
	// [Inspector.DeadLetters] and [Inspector.Tail] merge them, redrives put
	// each dead letter back into its own partition, and dead letters are
	// addressed as "PARTITION/ID" (see [DeadLetter.Ref]). Every Redis command
	// touches one partition's keys, so it works on Redis Cluster. As for a
	// Consumer, it must be at most MaxPartitions, and a partitioned Stream
	// must not carry a {hash tag}. Default 0: the stream is not
	// partitioned (1 means the same).
	Partitions int
}

// Inspector looks at a completion stream, its consumer groups and its
// dead-letter stream, and repairs them: it moves dead letters back to the
// stream (redrive) or deletes them (purge). It is the library behind the
// completion command (cmd/completion).
//
// Apart from [Inspector.Redrive], [Inspector.Purge], their variants and
// [Inspector.PublishTest], it only reads: it never joins a consumer group,
// so it does not disturb the consumers.
//
// An Inspector of a partitioned stream (InspectorConfig.Partitions > 1)
// shows all partitions at once; see [InspectorConfig.Partitions].
//
// An Inspector is safe for concurrent use, also by several processes at
// once: see [Inspector.Redrive] for what that means for redrives.
type Inspector struct {
	client InspectorClient
	cfg    InspectorConfig
	atomic bool // redrive with one script per entry

	// Of a partitioned stream (cfg.Partitions > 1); see
	// inspector_partitions.go.
	parts      []*Inspector   // one inspector of a single stream per partition
	partIndex  map[string]int // partition key -> index
	sharedDead bool           // all partitions share cfg.DeadLetterStream
}

// NewInspector returns an Inspector of the keys cfg names, with defaults
// filled in. It returns an error wrapping [ErrInvalidConfig] when the
// dead-letter stream is the stream itself, or when cfg.Partitions is one a
// [Consumer] would refuse (negative, more than MaxPartitions, or a
// partitioned Stream with a {hash tag}).
func NewInspector(client InspectorClient, cfg InspectorConfig) (*Inspector, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: the Redis client is nil", ErrInvalidConfig)
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if err := checkPartitions(cfg.Stream, cfg.Partitions); err != nil {
		return nil, err
	}
	if cfg.Partitions > 1 {
		return newPartitionedInspector(client, cfg)
	}
	if cfg.DeadLetterStream == "" {
		cfg.DeadLetterStream = DeadLetterStreamFor(cfg.Stream)
	}
	if cfg.DeadLetterStream == cfg.Stream {
		return nil, fmt.Errorf("%w: DeadLetterStream is %q; it must differ from Stream", ErrInvalidConfig, cfg.DeadLetterStream)
	}
	return &Inspector{client: client, cfg: cfg, atomic: keys.TopologyOf(client).SameNode(cfg.Stream, cfg.DeadLetterStream)}, nil
}

// Config returns the inspector's configuration, defaults filled in.
func (in *Inspector) Config() InspectorConfig { return in.cfg }

// ---------------------------------------------------------------------------
// Info

// StreamInfo describes a completion stream, its consumer groups and its
// dead-letter stream, as [Inspector.Info] found them.
type StreamInfo struct {
	// Stream is the stream's key.
	Stream string
	// Exists reports whether the key exists. A stream that does not exist
	// has no entries and no groups.
	Exists bool
	// Length is the number of entries in the stream (XLEN). Acknowledged
	// entries stay until the stream is trimmed.
	Length int64
	// FirstID and LastID are the ids of the oldest and newest entries, ""
	// when the stream is empty.
	FirstID, LastID string
	// Groups are the stream's consumer groups, by name.
	Groups []GroupInfo
	// DeadLetterStream is the dead-letter stream's key.
	DeadLetterStream string
	// DeadLetterLength is the number of dead letters.
	DeadLetterLength int64
	// Partitions is the state of each partition, by partition index, when
	// the Inspector looks at a partitioned stream; nil otherwise. The other
	// fields are then totals over the partitions: Stream is the stream's
	// name (no key of its own), Exists is true when any partition exists,
	// Length and DeadLetterLength are sums, FirstID and LastID are the
	// oldest and the newest entry of any partition, and each group and
	// consumer is merged over the partitions (see [GroupInfo] and
	// [ConsumerInfo]). DeadLetterStream is empty when each partition has a
	// dead-letter stream of its own; when they share one, it is that
	// stream, every partition reports its full length, and the total counts
	// it once.
	Partitions []StreamInfo
	// Owner is, for each of Partitions, the consumer of the inspector's
	// Group that owns the partition now (see Config.Partitions), "" when
	// none does; empty elsewhere.
	Owner string
}

// Group returns the group named name, and whether there is one.
func (si StreamInfo) Group(name string) (GroupInfo, bool) {
	for _, g := range si.Groups {
		if g.Name == name {
			return g, true
		}
	}
	return GroupInfo{}, false
}

// GroupInfo describes a consumer group (XINFO GROUPS, XINFO CONSUMERS).
//
// Over the partitions of a partitioned stream, it is the group's merged
// state: Pending, Lag and EntriesRead are sums over the partitions that
// have the group, LagKnown is true when every one of them knows its lag
// (Lag then sums the known ones), LastDeliveredID is the newest of their
// last delivered ids, and Consumers are merged by name.
type GroupInfo struct {
	// Name is the group's name.
	Name string
	// Pending is the number of entries delivered to the group's consumers
	// and not yet acknowledged.
	Pending int64
	// Lag is the number of entries not yet delivered to the group, when
	// LagKnown is true. Redis cannot tell after entries between the group's
	// position and the end of the stream were deleted (XDEL) or trimmed
	// before delivery; it then reports no lag and LagKnown is false. Redis
	// before 7.0 does not report lag at all (Lag is then 0).
	Lag int64
	// LagKnown reports whether Lag is meaningful.
	LagKnown bool
	// LastDeliveredID is the id of the last entry delivered to the group.
	LastDeliveredID string
	// EntriesRead is the number of entries delivered to the group, as Redis
	// counts them (entries-read; 0 before Redis 7.0).
	EntriesRead int64
	// Consumers are the group's consumers, by name.
	Consumers []ConsumerInfo
}

// ConsumerInfo describes one consumer of a group. Over the partitions of a
// partitioned stream, a consumer's Pending is the sum over the partitions,
// and Idle the shortest idle time of any partition.
type ConsumerInfo struct {
	// Name is the consumer's name (Config.Consumer).
	Name string
	// Pending is the number of entries the consumer holds unacknowledged.
	Pending int64
	// Idle is the time since the consumer last read (on Redis 7.0, since
	// its last successful read).
	Idle time.Duration
}

// Info returns the state of the stream, all its consumer groups with their
// consumers, and the length of the dead-letter stream. A stream that does
// not exist is no error: Info reports it with Exists false.
//
// The values are read with several commands, not as one snapshot: on a busy
// stream they may disagree slightly.
//
// Of a partitioned stream it returns the totals over the partitions and
// each partition's state in StreamInfo.Partitions.
func (in *Inspector) Info(ctx context.Context) (StreamInfo, error) {
	if in.parts != nil {
		return in.infoPartitioned(ctx)
	}
	si := StreamInfo{Stream: in.cfg.Stream, DeadLetterStream: in.cfg.DeadLetterStream}
	groups, err := in.client.XInfoGroups(ctx, in.cfg.Stream).Result()
	switch {
	case isNoSuchKey(err):
		// Look at the dead letters all the same: they outlive the stream.
	case err != nil:
		return StreamInfo{}, fmt.Errorf("completion: info: read groups of stream %q: %w", in.cfg.Stream, err)
	default:
		si.Exists = true
	}
	if si.Exists {
		if si.Length, err = in.client.XLen(ctx, in.cfg.Stream).Result(); err != nil {
			return StreamInfo{}, fmt.Errorf("completion: info: length of stream %q: %w", in.cfg.Stream, err)
		}
		first, err := in.client.XRangeN(ctx, in.cfg.Stream, "-", "+", 1).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("completion: info: first entry of stream %q: %w", in.cfg.Stream, err)
		}
		last, err := in.client.XRevRangeN(ctx, in.cfg.Stream, "+", "-", 1).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("completion: info: last entry of stream %q: %w", in.cfg.Stream, err)
		}
		if len(first) > 0 {
			si.FirstID = first[0].ID
		}
		if len(last) > 0 {
			si.LastID = last[0].ID
		}
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
	for _, g := range groups {
		gi := GroupInfo{
			Name:            g.Name,
			Pending:         g.Pending,
			Lag:             max(g.Lag, 0),
			LagKnown:        g.Lag >= 0,
			LastDeliveredID: g.LastDeliveredID,
			EntriesRead:     g.EntriesRead,
		}
		consumers, err := in.client.XInfoConsumers(ctx, in.cfg.Stream, g.Name).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("completion: info: consumers of group %q of stream %q: %w", g.Name, in.cfg.Stream, err)
		}
		sort.Slice(consumers, func(i, j int) bool { return consumers[i].Name < consumers[j].Name })
		for _, c := range consumers {
			gi.Consumers = append(gi.Consumers, ConsumerInfo{Name: c.Name, Pending: c.Pending, Idle: c.Idle})
		}
		si.Groups = append(si.Groups, gi)
	}
	if si.DeadLetterLength, err = in.client.XLen(ctx, in.cfg.DeadLetterStream).Result(); err != nil {
		return StreamInfo{}, fmt.Errorf("completion: info: length of dead-letter stream %q: %w", in.cfg.DeadLetterStream, err)
	}
	return si, nil
}

// isNoSuchKey reports whether err is the reply of XINFO to a missing key.
func isNoSuchKey(err error) bool {
	return err != nil && isServerError(err) && strings.Contains(err.Error(), "no such key")
}

// ---------------------------------------------------------------------------
// Pending

// PendingEntry is an entry delivered to a consumer group and not yet
// acknowledged (XPENDING, extended form).
type PendingEntry struct {
	// ID is the entry's id in the stream.
	ID string
	// Stream is the key of the stream that holds the entry: the
	// inspector's Stream, or of a partitioned stream the partition's key.
	Stream string
	// Partition is the index of the partition that holds the entry, of a
	// partitioned stream; 0 otherwise.
	Partition int
	// Consumer is the consumer that holds it.
	Consumer string
	// Idle is the time since it was last delivered (or its claim renewed).
	Idle time.Duration
	// Deliveries is how many times it was delivered.
	Deliveries int64
}

// Pending returns up to count pending entries of group, oldest first. An
// empty group means the inspector's Group; count 0 means
// DefaultInspectCount. A group that does not exist is an error (NOGROUP).
//
// Of a partitioned stream it returns the oldest count entries of all
// partitions, ordered by id (then partition index); partitions without the
// group are left out, and only a group no partition has is an error.
func (in *Inspector) Pending(ctx context.Context, group string, count int) ([]PendingEntry, error) {
	if group == "" {
		group = in.cfg.Group
	}
	n, err := inspectCount(count)
	if err != nil {
		return nil, fmt.Errorf("completion: pending: %w", err)
	}
	if in.parts != nil {
		return in.pendingPartitioned(ctx, group, n)
	}
	res, err := in.client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: in.cfg.Stream, Group: group, Start: "-", End: "+", Count: n,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("completion: pending entries of group %q of stream %q: %w", group, in.cfg.Stream, err)
	}
	out := make([]PendingEntry, len(res))
	for i, p := range res {
		out[i] = PendingEntry{ID: p.ID, Stream: in.cfg.Stream, Consumer: p.Consumer, Idle: p.Idle, Deliveries: p.RetryCount}
	}
	return out, nil
}

func inspectCount(count int) (int64, error) {
	switch {
	case count < 0:
		return 0, fmt.Errorf("count is %d; it must be positive (0 means %d)", count, DefaultInspectCount)
	case count == 0:
		return DefaultInspectCount, nil
	}
	return int64(count), nil
}

// ---------------------------------------------------------------------------
// Dead letters

// DeadLetter is an entry of the dead-letter stream, parsed (see the
// DeadLetter...Field constants for the format).
type DeadLetter struct {
	// ID is the entry's id in the dead-letter stream: the id to give
	// [Inspector.Redrive] or [Inspector.Purge]. Of a partitioned stream,
	// where an id alone may be in several partitions' dead-letter
	// streams, give them Ref instead.
	ID string
	// Ref names the dead letter for [Inspector.Redrive], [Inspector.Purge]
	// and as a start for [Inspector.DeadLetters]: ID, or of a partitioned
	// stream "PARTITION/ID" (e.g. "2/1700000000000-0").
	Ref string
	// DeadLetterStream is the key of the dead-letter stream that holds it.
	DeadLetterStream string
	// Partition is, of a partitioned stream, the index of the partition
	// the entry belongs to, and that a redrive puts it back into: the
	// partition whose dead-letter stream holds it, or, when the partitions
	// share one dead-letter stream, the partition its dl_stream field
	// names (failing that, the one [WithPartitions] picks for its task
	// id). 0 otherwise.
	Partition int
	// Reason says why the entry was dead-lettered: one of the Reason
	// constants.
	Reason string
	// Error is the error text, if there was one.
	Error string
	// Deliveries is how many times the entry had been delivered.
	Deliveries int64
	// Consumer, Group and Stream are the consumer that moved the entry,
	// its group and the stream the entry came from.
	Consumer, Group, Stream string
	// SourceID is the entry's id in the stream it came from.
	SourceID string
	// Time is when it was dead-lettered; zero if the entry does not say.
	Time time.Time
	// Fields are the original entry's fields, exactly as they were in the
	// source stream (a field renamed "orig_dl_..." on the way in has its
	// name "dl_..." back). A redrive writes these.
	Fields map[string]string
	// Message is the original message, or nil when it could not be
	// decoded; DecodeErr then says why.
	Message *Message
	// DecodeErr is the reason Message is nil.
	DecodeErr error
}

// DeadLetters returns up to count dead letters, oldest first, starting at
// id start ("" or "-" for the oldest; an id prefixed with "(" excludes that
// id, which is how to ask for the page after the last one seen). count 0
// means DefaultInspectCount.
//
// Of a partitioned stream it merges the partitions' dead letters, ordered
// by id and then partition index; start is then an id (applied to every
// partition) or a [DeadLetter.Ref] "PARTITION/ID" (a position in that
// order), so that "(" + the last Ref seen asks for the next page.
func (in *Inspector) DeadLetters(ctx context.Context, start string, count int) ([]DeadLetter, error) {
	if start == "" {
		start = "-"
	}
	n, err := inspectCount(count)
	if err != nil {
		return nil, fmt.Errorf("completion: dead letters: %w", err)
	}
	if in.parts != nil {
		return in.deadLettersPartitioned(ctx, start, n)
	}
	if strings.HasPrefix(start, "(") { // exclusive start without needing Redis 6.2
		if start, err = nextID(start[1:]); err != nil {
			return nil, fmt.Errorf("completion: dead letters: %w", err)
		}
	}
	msgs, err := in.client.XRangeN(ctx, in.cfg.DeadLetterStream, start, "+", n).Result()
	if err != nil {
		return nil, fmt.Errorf("completion: read dead letters of %q from %q: %w", in.cfg.DeadLetterStream, start, err)
	}
	out := make([]DeadLetter, len(msgs))
	for i, m := range msgs {
		out[i] = parseDeadLetter(m)
		out[i].Ref = m.ID
		out[i].DeadLetterStream = in.cfg.DeadLetterStream
	}
	return out, nil
}

func parseDeadLetter(m redis.XMessage) DeadLetter {
	dl := DeadLetter{ID: m.ID, Fields: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		s := fmt.Sprint(v)
		switch k {
		case DeadLetterReasonField:
			dl.Reason = s
		case DeadLetterErrorField:
			dl.Error = s
		case DeadLetterDeliveriesField:
			dl.Deliveries, _ = strconv.ParseInt(s, 10, 64)
		case DeadLetterConsumerField:
			dl.Consumer = s
		case DeadLetterGroupField:
			dl.Group = s
		case DeadLetterStreamField:
			dl.Stream = s
		case DeadLetterIDField:
			dl.SourceID = s
		case DeadLetterTimeField:
			dl.Time, _ = time.Parse(time.RFC3339Nano, s)
		default:
			if name, ok := originalField(k); ok {
				dl.Fields[name] = s
			}
		}
	}
	dl.Message, dl.DecodeErr = decodeFields(dl.Fields)
	return dl
}

// originalField maps a dead-letter field name to the original entry's field
// name (undoing escapeFieldName), or reports false for the dead-letter's own
// fields.
func originalField(name string) (string, bool) {
	if rest, ok := strings.CutPrefix(name, origFieldPrefix); ok {
		return rest, true
	}
	if strings.HasPrefix(name, deadLetterFieldPrefix) {
		return "", false
	}
	return name, true
}

// decodeFields decodes the message in an entry's DataField.
func decodeFields(fields map[string]string) (*Message, error) {
	data, ok := fields[DataField]
	if !ok {
		return nil, fmt.Errorf("%w: the entry has no %q field", ErrMalformed, DataField)
	}
	var m Message
	if err := m.UnmarshalJSON([]byte(data)); err != nil {
		return nil, err
	}
	return &m, nil
}

// ---------------------------------------------------------------------------
// Redrive and purge

// Redrive moves the dead letters with the given ids back to the stream, in
// the order given, and returns how many it moved. An id that is not (or no
// longer) in the dead-letter stream is skipped, so redriving twice moves
// nothing the second time. Each moved entry gets a new id at the end of the
// stream, with the original entry's fields (the dl_ fields removed, fields
// renamed orig_dl_... named dl_... again), and is delivered to every group
// as a new entry. The stream is not trimmed.
//
// The entries are always written to the inspector's Stream, whichever
// stream their dl_stream field names.
//
// When both keys live on one node (a *redis.Client; in a cluster, keys in
// one slot, as the default [DeadLetterStreamFor] is), each entry is moved by
// one Lua script that checks the dead letter is still there, adds it to the
// stream and deletes it, so that every dead letter is moved exactly once
// even when several operators redrive at the same time. Otherwise the move is XRANGE, XADD, XDEL: a
// crash between XADD and XDEL, or another redrive of the same entry at the
// same moment, can add it to the stream twice (never lose it); consumers
// must tolerate duplicates anyway.
//
// Redrive stops at the first error and returns the number moved so far
// with it.
//
// Of a partitioned stream, each dead letter goes back into its own
// partition ([DeadLetter.Partition]). An id is a [DeadLetter.Ref]
// "PARTITION/ID", or a bare ID, which Redrive looks for in every
// partition's dead-letter stream; a bare ID found in several is refused
// with [ErrAmbiguousID] before anything is moved.
func (in *Inspector) Redrive(ctx context.Context, ids ...string) (int, error) {
	if in.parts != nil {
		return in.redrivePartitioned(ctx, ids)
	}
	moved := 0
	for _, id := range ids {
		ok, err := in.redriveOne(ctx, id)
		if err != nil {
			return moved, err
		}
		if ok {
			moved++
		}
	}
	return moved, nil
}

func (in *Inspector) redriveOne(ctx context.Context, id string) (bool, error) {
	wrap := func(err error) error {
		return fmt.Errorf("completion: redrive dead letter %s from %q to %q: %w", id, in.cfg.DeadLetterStream, in.cfg.Stream, err)
	}
	if _, err := parseStreamID(id, false); err != nil || !strings.Contains(id, "-") {
		return false, wrap(errors.New("not a full stream id (ms-seq)"))
	}
	if in.atomic {
		err := scripts.Redrive.Run(ctx, in.client, []string{in.cfg.DeadLetterStream, in.cfg.Stream}, id, MaxEntryFields).Err()
		switch {
		case errors.Is(err, redis.Nil):
			return false, nil
		case err != nil:
			return false, wrap(err)
		}
		return true, nil
	}
	msgs, err := in.client.XRangeN(ctx, in.cfg.DeadLetterStream, id, id, 1).Result()
	if err != nil {
		return false, wrap(err)
	}
	if len(msgs) == 0 {
		return false, nil
	}
	values := make([]any, 0, 2*len(msgs[0].Values))
	names := make([]string, 0, len(msgs[0].Values))
	for k := range msgs[0].Values {
		names = append(names, k)
	}
	sort.Strings(names) // a deterministic order; the original order is lost
	for _, k := range names {
		if name, ok := originalField(k); ok {
			values = append(values, name, msgs[0].Values[k])
		}
	}
	if len(values) == 0 {
		return false, wrap(errors.New("the dead letter holds no original fields"))
	}
	if err := in.client.XAdd(ctx, &redis.XAddArgs{Stream: in.cfg.Stream, Values: values}).Err(); err != nil {
		return false, wrap(err)
	}
	if err := in.client.XDel(ctx, in.cfg.DeadLetterStream, id).Err(); err != nil {
		return true, wrap(fmt.Errorf("added to the stream, but not deleted from the dead-letter stream (redriving it again adds it twice): %w", err))
	}
	return true, nil
}

// RedriveRange redrives (see [Inspector.Redrive]) the dead letters with ids
// from start to end, both included, oldest first, at most limit of them (0:
// no limit). "-" and "+" mean the oldest and the newest; end "+" means the
// newest when RedriveRange starts, so dead letters added meanwhile (perhaps
// the same entries, failing again) are left alone. It returns how many it
// moved.
//
// Of a partitioned stream it redrives the dead letters of all partitions in
// the order of [Inspector.DeadLetters], each into its own partition; start
// and end are ids (applied to every partition) or Refs "PARTITION/ID"
// (positions in that order), and "+" means each partition's newest when
// RedriveRange starts.
func (in *Inspector) RedriveRange(ctx context.Context, start, end string, limit int) (int, error) {
	if limit < 0 {
		return 0, fmt.Errorf("completion: redrive: limit is %d; it must be positive (0 means no limit)", limit)
	}
	if in.parts != nil {
		return in.redriveRangePartitioned(ctx, start, end, limit)
	}
	if start == "" {
		start = "-"
	}
	if end == "" || end == "+" {
		last, err := in.client.XRevRangeN(ctx, in.cfg.DeadLetterStream, "+", "-", 1).Result()
		if err != nil {
			return 0, fmt.Errorf("completion: redrive: read the newest dead letter of %q: %w", in.cfg.DeadLetterStream, err)
		}
		if len(last) == 0 {
			return 0, nil
		}
		end = last[0].ID
	}
	moved, seen := 0, 0
	for limit == 0 || seen < limit {
		n := int64(redrivePage)
		if limit > 0 {
			n = min(n, int64(limit-seen))
		}
		msgs, err := in.client.XRangeN(ctx, in.cfg.DeadLetterStream, start, end, n).Result()
		if err != nil {
			return moved, fmt.Errorf("completion: redrive: read dead letters of %q from %s to %s: %w", in.cfg.DeadLetterStream, start, end, err)
		}
		for _, m := range msgs {
			ok, err := in.redriveOne(ctx, m.ID)
			if err != nil {
				return moved, err
			}
			if ok {
				moved++
			}
		}
		seen += len(msgs)
		if int64(len(msgs)) < n {
			break
		}
		if start, err = nextID(msgs[len(msgs)-1].ID); err != nil {
			return moved, fmt.Errorf("completion: redrive: %w", err)
		}
	}
	return moved, nil
}

// RedriveAll redrives every dead letter present when it starts (see
// [Inspector.RedriveRange]) and returns how many it moved.
func (in *Inspector) RedriveAll(ctx context.Context) (int, error) {
	return in.RedriveRange(ctx, "-", "+", 0)
}

// Purge deletes the dead letters with the given ids and returns how many
// there were. Unknown ids are skipped.
//
// Of a partitioned stream, an id is a [DeadLetter.Ref] "PARTITION/ID", or a
// bare ID, which Purge looks for in every partition's dead-letter stream; a
// bare ID found in several is refused with [ErrAmbiguousID] before anything
// is deleted.
func (in *Inspector) Purge(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if in.parts != nil {
		return in.purgePartitioned(ctx, ids)
	}
	n, err := in.client.XDel(ctx, in.cfg.DeadLetterStream, ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("completion: purge dead letters from %q: %w", in.cfg.DeadLetterStream, err)
	}
	return int(n), nil
}

// PurgeAll deletes every dead letter, also those added while it runs, and
// returns how many it deleted. It empties the dead-letter stream with
// XTRIM MAXLEN 0 rather than deleting the key, so consumer groups someone
// may have created on it survive. Of a partitioned stream it empties every
// partition's dead-letter stream and returns the sum.
func (in *Inspector) PurgeAll(ctx context.Context) (int, error) {
	if in.parts != nil {
		return in.purgeAllPartitioned(ctx)
	}
	n, err := in.client.XTrimMaxLen(ctx, in.cfg.DeadLetterStream, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("completion: purge all dead letters of %q: %w", in.cfg.DeadLetterStream, err)
	}
	return int(n), nil
}

// ---------------------------------------------------------------------------
// Publish and tail

// PublishTest publishes msg to the inspector's stream with [Publish] (and
// its options) and returns the new entry's id: a way to check, end to end,
// that consumers are alive.
//
// Of a partitioned stream it publishes with [WithPartitions] (overriding
// any in opts) to the partition of msg's task id, which
// [Inspector.PartitionFor] names.
func (in *Inspector) PublishTest(ctx context.Context, msg Message, opts ...PublishOption) (string, error) {
	if in.parts != nil {
		opts = append(opts[:len(opts):len(opts)], WithPartitions(len(in.parts)))
	}
	return Publish(ctx, in.client, in.cfg.Stream, msg, opts...)
}

// Entry is an entry of the stream, as [Inspector.Tail] hands it over.
type Entry struct {
	// ID is the entry's id.
	ID string
	// Stream is the key of the stream the entry is in: the inspector's
	// Stream, or of a partitioned stream the partition's key.
	Stream string
	// Partition is the index of the partition the entry is in, of a
	// partitioned stream; 0 otherwise.
	Partition int
	// Fields are the entry's fields.
	Fields map[string]string
	// Message is the decoded message, or nil when the entry holds none that
	// can be decoded; DecodeErr then says why.
	Message *Message
	// DecodeErr is the reason Message is nil.
	DecodeErr error
}

// Tail follows the stream with XREAD BLOCK and calls fn with each entry
// added after the entry with id from, in order, until ctx ends; then it
// returns nil. from "" or "$" means entries added from now on; "0" means
// every entry in the stream, then new ones. If fn returns an error, Tail
// stops and returns it.
//
// Tail reads without a consumer group, so the consumers do not notice it,
// and it sees every entry, whichever consumer handles it. It returns within
// about a second of ctx ending.
//
// Of a partitioned stream it follows every partition: entries of one
// partition come in order, those of different partitions interleaved as
// they are read. from is then "", "$", "0", an id (applied to every
// partition) or "PARTITION/ID" (the entries after it in the order of id,
// then partition index). fn is called from Tail's goroutine, one entry at
// a time. On a single node (a *redis.Client) one XREAD reads all
// partitions; otherwise (a cluster, where a command must not touch two
// partitions) each partition is read by a blocking XREAD of its own, which
// holds a connection while it waits: give a *redis.ClusterClient a
// PoolSize above the number of partitions per master, or the readers wait
// for connections.
func (in *Inspector) Tail(ctx context.Context, from string, fn func(Entry) error) error {
	if in.parts != nil {
		return in.tailPartitioned(ctx, from, fn)
	}
	if from == "" || from == "$" {
		// Start after the current last entry, rather than sending "$"
		// with every read, which would skip what arrives between reads.
		last, err := in.client.XRevRangeN(ctx, in.cfg.Stream, "+", "-", 1).Result()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("completion: tail: read the last entry of %q: %w", in.cfg.Stream, err)
		}
		from = "0-0"
		if len(last) > 0 {
			from = last[0].ID
		}
	}
	for ctx.Err() == nil {
		res, err := in.client.XRead(ctx, &redis.XReadArgs{
			Streams: []string{in.cfg.Stream, from}, Count: 100, Block: tailBlock,
		}).Result()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return fmt.Errorf("completion: tail stream %q after %s: %w", in.cfg.Stream, from, err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				e := newEntry(in.cfg.Stream, m)
				if err := fn(e); err != nil {
					return err
				}
				from = m.ID
			}
		}
	}
	return nil
}

// newEntry returns the stream entry m of stream as an [Entry].
func newEntry(stream string, m redis.XMessage) Entry {
	e := Entry{ID: m.ID, Stream: stream, Fields: make(map[string]string, len(m.Values))}
	for k, v := range m.Values {
		e.Fields[k] = fmt.Sprint(v)
	}
	e.Message, e.DecodeErr = decodeFields(e.Fields)
	return e
}

// nextID returns the smallest stream id greater than id ("ms-seq" or "ms",
// which is ms-0, as Redis reads a start id).
func nextID(id string) (string, error) {
	a, err := parseStreamID(id, false)
	if err != nil {
		return "", fmt.Errorf("invalid stream id %q", id)
	}
	n, ok := a.next()
	if !ok {
		return "", fmt.Errorf("no stream id follows %q", id)
	}
	return n.String(), nil
}
