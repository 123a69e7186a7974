package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// PendingEntry is an entry delivered to a consumer group and not yet
// acknowledged (XPENDING, extended form).
type PendingEntry struct {
	// ID is the entry's id in its stream.
	ID string
	// Ref names the entry: ID, or of a partitioned stream "PARTITION/ID".
	Ref string
	// Stream is the key of the stream that holds the entry: the stream, or
	// of a partitioned stream the partition's key.
	Stream string
	// Partition is the index of the partition that holds the entry; 0 of a
	// stream that is not partitioned.
	Partition int
	// Consumer is the consumer that holds it.
	Consumer string
	// Idle is the time since it was last delivered (or its claim renewed).
	Idle time.Duration
	// Deliveries is how many times it was delivered.
	Deliveries int64
}

// PendingQuery says which pending entries [Inspector.Pending] returns.
type PendingQuery struct {
	// Group is the consumer group. Default: the inspector's Group.
	Group string
	// Consumer, when set, keeps only the entries this consumer holds.
	Consumer string
	// Start is where the list begins: "" or "-" for the oldest entry, an id
	// or a Ref (inclusive), or either prefixed with "(" (exclusive), so that
	// "(" + the last Ref seen asks for the next page.
	Start string
	// Count is the most entries returned. Default DefaultCount.
	Count int
}

// Pending returns pending entries of a group, oldest first (by id, then
// partition index), as q says. A group that does not exist is an error
// (NOGROUP); of a partitioned stream, partitions without the group are left
// out, and only a group no partition has is an error.
func (in *Inspector) Pending(ctx context.Context, q PendingQuery) ([]PendingEntry, error) {
	if q.Group == "" {
		q.Group = in.cfg.Group
	}
	n, err := countOf(q.Count)
	if err != nil {
		return nil, fmt.Errorf("inspect: pending: %w", err)
	}
	starts, err := in.startBounds(q.Start, len(in.parts), func(p int) int { return p })
	if err != nil {
		return nil, fmt.Errorf("inspect: pending: %w", err)
	}
	lists := make([][]PendingEntry, len(in.parts))
	noGroup := make([]error, len(in.parts))
	err = fanOut(ctx, len(in.parts), func(ctx context.Context, i int) error {
		if starts[i] == "" {
			return nil
		}
		l, err := in.pendingOf(ctx, i, q, starts[i], n)
		if redis.HasErrorPrefix(err, "NOGROUP") {
			noGroup[i] = err
			return nil
		}
		lists[i] = l
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := in.allNoGroup(noGroup, q.Group); err != nil {
		return nil, err
	}
	var out []PendingEntry // not sized by n: a count may be far above what there is
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortFunc(out, func(a, b PendingEntry) int {
		if c := compareStreamIDs(a.ID, b.ID); c != 0 {
			return c
		}
		return a.Partition - b.Partition
	})
	if int64(len(out)) > n {
		out = out[:n]
	}
	if out == nil {
		out = []PendingEntry{}
	}
	return out, nil
}

// pendingOf returns up to n pending entries of partition i from start. A
// NOGROUP error is returned as it is.
func (in *Inspector) pendingOf(ctx context.Context, i int, q PendingQuery, start string, n int64) ([]PendingEntry, error) {
	res, err := in.client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: in.parts[i], Group: q.Group, Start: start, End: "+", Count: n, Consumer: q.Consumer,
	}).Result()
	switch {
	case redis.HasErrorPrefix(err, "NOGROUP"):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("inspect: pending entries of group %q of stream %q: %w", q.Group, in.parts[i], err)
	}
	l := make([]PendingEntry, len(res))
	for j, p := range res {
		l[j] = PendingEntry{ID: p.ID, Ref: in.ref(i, p.ID), Stream: in.parts[i], Partition: i,
			Consumer: p.Consumer, Idle: p.Idle, Deliveries: p.RetryCount}
	}
	return l, nil
}

// allNoGroup returns an error when every partition lacked the group
// (noGroup[i] set), naming the groups the stream has.
func (in *Inspector) allNoGroup(noGroup []error, group string) error {
	for _, err := range noGroup {
		if err == nil {
			return nil
		}
	}
	var re redis.Error
	errors.As(noGroup[0], &re)
	what := fmt.Sprintf("stream %q has no group %q", in.cfg.Stream, group)
	if in.partitioned() {
		what = fmt.Sprintf("none of the %d partitions of stream %q has the group %q", len(in.parts), in.cfg.Stream, group)
	}
	return fmt.Errorf("inspect: pending entries: %s (%s): %w", what, in.groupHint(group), re)
}

// groupHint names the groups the stream has, to say what to ask for
// instead of a missing group.
func (in *Inspector) groupHint(missing string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	seen := map[string]bool{}
	var names []string
	for _, key := range in.parts {
		groups, err := in.client.XInfoGroups(ctx, key).Result()
		if err != nil {
			continue
		}
		for _, g := range groups {
			if !seen[g.Name] {
				seen[g.Name] = true
				names = append(names, g.Name)
			}
		}
	}
	slices.Sort(names)
	switch len(names) {
	case 0:
		return "the stream has no consumer groups: is the stream name right, and has a consumer run?"
	case 1:
		return fmt.Sprintf("its one group is %q", names[0])
	}
	return fmt.Sprintf("its groups are %q", names)
}

// countOf checks a count: 0 means DefaultCount.
func countOf(count int) (int64, error) {
	switch {
	case count < 0:
		return 0, fmt.Errorf("count is %d; it must be positive (0 means %d)", count, DefaultCount)
	case count == 0:
		return DefaultCount, nil
	}
	return int64(count), nil
}
