package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
)

// StreamInfo describes a completion stream, its consumer groups and its
// dead letters, as [Inspector.Info] found them.
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
	// Partitions is the state of each partition, by partition index, of a
	// partitioned stream; nil otherwise. The other fields are then totals
	// over the partitions: Stream is the stream's name (no key of its own),
	// Exists is true when any partition exists, Length and DeadLetterLength
	// are sums, FirstID and LastID are the oldest and the newest entry of
	// any partition, and each group and consumer is merged over the
	// partitions (see [GroupInfo] and [ConsumerInfo]). DeadLetterStream is
	// empty when each partition has a dead-letter stream of its own; when
	// they share one, it is that stream, every partition reports its full
	// length, and the total counts it once.
	Partitions []StreamInfo
	// Owner is, for each of Partitions, the consumer of the inspector's
	// Group that owns the partition now (see completion.Config.Partitions),
	// "" when none does; empty elsewhere.
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
	// before delivery; it then reports no lag and LagKnown is false.
	// miniredis reports the stream's length as the lag whatever was read:
	// its figure means nothing.
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
	// Name is the consumer's name (completion.Config.Consumer).
	Name string
	// Pending is the number of entries the consumer holds unacknowledged.
	Pending int64
	// Idle is the time since the consumer last read (on Redis 7.0, since
	// its last successful read).
	Idle time.Duration
}

// Info returns the state of the stream, all its consumer groups with their
// consumers, and the number of dead letters. A stream that does not exist
// is no error: Info reports it with Exists false.
//
// The values are read with several commands, not as one snapshot: on a busy
// stream they may disagree slightly.
//
// Of a partitioned stream it returns the totals over the partitions and
// each partition's state, with its owner, in StreamInfo.Partitions.
func (in *Inspector) Info(ctx context.Context) (StreamInfo, error) {
	parts := make([]StreamInfo, len(in.parts))
	err := fanOut(ctx, len(in.parts), func(ctx context.Context, i int) error {
		var err error
		parts[i], err = in.partitionInfo(ctx, i)
		return err
	})
	if err != nil {
		return StreamInfo{}, err
	}
	if !in.partitioned() {
		return parts[0], nil
	}
	err = fanOut(ctx, len(in.parts), func(ctx context.Context, i int) error {
		owner, err := in.client.Get(ctx, keys.Owner(in.cfg.Stream, i, len(in.parts), in.cfg.Group)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("inspect: info: read the owner of partition %d: %w", i, err)
		}
		parts[i].Owner = owner
		return nil
	})
	if err != nil {
		return StreamInfo{}, err
	}
	return in.mergeInfo(parts), nil
}

// partitionInfo returns the state of partition i.
func (in *Inspector) partitionInfo(ctx context.Context, i int) (StreamInfo, error) {
	key := in.parts[i]
	dead := in.dead[in.sourceOf(i)].key
	si := StreamInfo{Stream: key, DeadLetterStream: dead}
	groups, err := in.client.XInfoGroups(ctx, key).Result()
	switch {
	case isNoSuchKey(err):
		// Look at the dead letters all the same: they outlive the stream.
	case err != nil:
		return StreamInfo{}, fmt.Errorf("inspect: info: read the groups of stream %q: %w", key, err)
	default:
		si.Exists = true
	}
	if si.Exists {
		if si.Length, err = in.client.XLen(ctx, key).Result(); err != nil {
			return StreamInfo{}, fmt.Errorf("inspect: info: length of stream %q: %w", key, err)
		}
		first, err := in.client.XRangeN(ctx, key, "-", "+", 1).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("inspect: info: first entry of stream %q: %w", key, err)
		}
		last, err := in.client.XRevRangeN(ctx, key, "+", "-", 1).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("inspect: info: last entry of stream %q: %w", key, err)
		}
		if len(first) > 0 {
			si.FirstID = first[0].ID
		}
		if len(last) > 0 {
			si.LastID = last[0].ID
		}
	}
	slices.SortFunc(groups, func(a, b redis.XInfoGroup) int { return strings.Compare(a.Name, b.Name) })
	for _, g := range groups {
		gi := GroupInfo{
			Name:            g.Name,
			Pending:         g.Pending,
			Lag:             max(g.Lag, 0),
			LagKnown:        g.Lag >= 0,
			LastDeliveredID: g.LastDeliveredID,
			EntriesRead:     g.EntriesRead,
		}
		consumers, err := in.client.XInfoConsumers(ctx, key, g.Name).Result()
		if err != nil {
			return StreamInfo{}, fmt.Errorf("inspect: info: consumers of group %q of stream %q: %w", g.Name, key, err)
		}
		slices.SortFunc(consumers, func(a, b redis.XInfoConsumer) int { return strings.Compare(a.Name, b.Name) })
		for _, c := range consumers {
			gi.Consumers = append(gi.Consumers, ConsumerInfo{Name: c.Name, Pending: c.Pending, Idle: c.Idle})
		}
		si.Groups = append(si.Groups, gi)
	}
	if si.DeadLetterLength, err = in.client.XLen(ctx, dead).Result(); err != nil {
		return StreamInfo{}, fmt.Errorf("inspect: info: length of dead-letter stream %q: %w", dead, err)
	}
	return si, nil
}

// isNoSuchKey reports whether err is the reply of XINFO to a missing key.
func isNoSuchKey(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(err.Error(), "no such key")
}

// mergeInfo returns the totals over the partitions' states, with the
// states themselves in Partitions.
func (in *Inspector) mergeInfo(parts []StreamInfo) StreamInfo {
	si := StreamInfo{Stream: in.cfg.Stream, DeadLetterStream: in.cfg.DeadLetterStream, Partitions: parts}
	groups := map[string]*GroupInfo{}
	consumers := map[string]map[string]*ConsumerInfo{}
	for _, p := range parts {
		si.Exists = si.Exists || p.Exists
		si.Length += p.Length
		if p.FirstID != "" && (si.FirstID == "" || compareStreamIDs(p.FirstID, si.FirstID) < 0) {
			si.FirstID = p.FirstID
		}
		if p.LastID != "" && (si.LastID == "" || compareStreamIDs(p.LastID, si.LastID) > 0) {
			si.LastID = p.LastID
		}
		if in.cfg.DeadLetterStream != "" {
			si.DeadLetterLength = max(si.DeadLetterLength, p.DeadLetterLength) // one stream, read once per partition
		} else {
			si.DeadLetterLength += p.DeadLetterLength
		}
		for _, pg := range p.Groups {
			g := groups[pg.Name]
			if g == nil {
				g = &GroupInfo{Name: pg.Name, LagKnown: true, LastDeliveredID: pg.LastDeliveredID}
				groups[pg.Name] = g
				consumers[pg.Name] = map[string]*ConsumerInfo{}
			}
			g.Pending += pg.Pending
			g.EntriesRead += pg.EntriesRead
			if pg.LagKnown {
				g.Lag += pg.Lag
			} else {
				g.LagKnown = false
			}
			if compareStreamIDs(pg.LastDeliveredID, g.LastDeliveredID) > 0 {
				g.LastDeliveredID = pg.LastDeliveredID
			}
			for _, pc := range pg.Consumers {
				c := consumers[pg.Name][pc.Name]
				if c == nil {
					c = &ConsumerInfo{Name: pc.Name, Idle: pc.Idle}
					consumers[pg.Name][pc.Name] = c
				}
				c.Pending += pc.Pending
				c.Idle = min(c.Idle, pc.Idle)
			}
		}
	}
	for name, g := range groups {
		for _, c := range consumers[name] {
			g.Consumers = append(g.Consumers, *c)
		}
		slices.SortFunc(g.Consumers, func(a, b ConsumerInfo) int { return strings.Compare(a.Name, b.Name) })
		si.Groups = append(si.Groups, *g)
	}
	slices.SortFunc(si.Groups, func(a, b GroupInfo) int { return strings.Compare(a.Name, b.Name) })
	return si
}

// sourceOf returns the index of the dead-letter source that holds
// partition part's dead letters.
func (in *Inspector) sourceOf(part int) int {
	if len(in.dead) == 1 {
		return 0
	}
	return part
}
