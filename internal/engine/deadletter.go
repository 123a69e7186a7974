package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
	"github.com/streamrelay/completion/internal/wire"
)

// deadLetterMove is a move to the dead-letter stream the acker carries
// out. Where the stream and the dead-letter stream share a node, the move
// is one script that copies the entry's fields itself (no body travels
// through the client) and acknowledges last, so that a failed write
// acknowledges nothing. Otherwise (a cluster without a shared hash tag) the
// dead letter is written first and acknowledged second, so that a crash in
// between leaves a duplicate, never a loss.
type deadLetterMove struct {
	reason string
	cause  error
	meta   []any // the dl_ fields, dl_reason and dl_error first
	// given: the original fields travel with the move (fields) instead of
	// being copied by the script: the entry was deleted from the stream,
	// or the keys live on different nodes. An oversize entry's fields are
	// never written.
	given  bool
	fields []any
	added  bool // two-step move: the XADD is done, the XACK is not
}

// newMove returns the move of d with its reason.
func (e *Engine) newMove(d *Delivery, reason string, cause error) *deadLetterMove {
	meta := make([]any, 0, 22)
	meta = append(meta,
		wire.DeadLetterReasonField, reason,
		wire.DeadLetterErrorField, truncate(errText(cause), wire.MaxDeadLetterErrorBytes),
		wire.DeadLetterDeliveriesField, strconv.FormatInt(d.Count, 10),
		wire.DeadLetterConsumerField, e.p.Consumer,
		wire.DeadLetterGroupField, e.p.Group,
		wire.DeadLetterStreamField, e.p.Stream,
		wire.DeadLetterIDField, d.ID,
		wire.DeadLetterTimeField, e.p.Clock.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	)
	if d.oversize {
		data, _ := d.Fields[wire.DataField].(string)
		if len(data) > wire.MaxExcerptBytes {
			// A copy: a substring would keep the whole entry in memory
			// until the move is done.
			data = strings.Clone(data[:wire.MaxExcerptBytes])
		}
		meta = append(meta,
			wire.DeadLetterSizeField, strconv.Itoa(wire.EntryBytes(d.Fields)),
			wire.DeadLetterFieldsField, strconv.Itoa(len(d.Fields)),
			wire.DeadLetterExcerptField, data)
	}
	return &deadLetterMove{reason: reason, cause: cause, meta: meta}
}

// give makes d's move carry the entry's fields as the engine read them
// (their order is lost: go-redis hands them over as a map).
func (d *Delivery) give() {
	d.dl.given = true
	if d.oversize {
		return
	}
	names := make([]string, 0, len(d.Fields))
	for k := range d.Fields {
		names = append(names, k)
	}
	sort.Strings(names)
	d.dl.fields = make([]any, 0, 2*len(names))
	for _, k := range names {
		d.dl.fields = append(d.dl.fields, escapeFieldName(k), d.Fields[k])
	}
}

// escapeFieldName returns the name an original field gets in a dead letter;
// a redrive takes one "orig_" off again.
func escapeFieldName(name string) string {
	if strings.HasPrefix(name, wire.DeadLetterFieldPrefix) || strings.HasPrefix(name, wire.OrigFieldPrefix) {
		return wire.OrigFieldPrefix + name
	}
	return name
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// atomicMoves reports whether a move can be one script: on a single node,
// or when both keys share a node.
func (e *Engine) atomicMoves() bool {
	return keys.TopologyOf(e.p.Client).SameNode(e.p.Stream, e.p.DeadLetterStream)
}

// scriptArgs returns the arguments of d's move script.
func (e *Engine) scriptArgs(d *Delivery) []any {
	mode := scripts.ModeCopy
	if d.dl.given || d.oversize {
		mode = scripts.ModeGiven
	}
	args := make([]any, 0, 7+len(d.dl.meta)+len(d.dl.fields))
	args = append(args, e.p.Group, d.ID, e.p.DeadLetterMaxLen, wire.MaxEntryFields, e.p.MaxPayloadBytes, mode, len(d.dl.meta))
	args = append(args, d.dl.meta...)
	if d.dl.given && !d.oversize {
		args = append(args, d.dl.fields...)
	}
	return args
}

// xaddOf returns the XADD of d's dead letter, for the two-step move.
func (e *Engine) xaddOf(d *Delivery) *redis.XAddArgs {
	if !d.dl.given {
		d.give()
	}
	values := make([]any, 0, len(d.dl.fields)+len(d.dl.meta))
	values = append(append(values, d.dl.fields...), d.dl.meta...)
	a := &redis.XAddArgs{Stream: e.p.DeadLetterStream, Values: values}
	if e.p.DeadLetterMaxLen > 0 {
		a.MaxLen, a.Approx = e.p.DeadLetterMaxLen, true
	}
	return a
}

// errEntryGone: the move script found the entry deleted from the stream; the
// move must carry the fields itself.
var errEntryGone = errors.New("the entry is no longer in the stream")

// queueScripts queues the move script of each delivery in ds on p.
func (e *Engine) queueScripts(ctx context.Context, p redis.Pipeliner, ds []*Delivery) []*redis.Cmd {
	keys := []string{e.p.Stream, e.p.DeadLetterStream}
	cmds := make([]*redis.Cmd, len(ds))
	for i, d := range ds {
		cmds[i] = scripts.DeadLetter.EvalSha(ctx, p, keys, e.scriptArgs(d)...)
	}
	return cmds
}

// settleScript reads the reply of d's move script, running it again when
// the server had not loaded it. It records the move and forgets d, or
// returns errEntryGone, or the error that leaves d pending.
func (e *Engine) settleScript(ctx context.Context, d *Delivery, cmd *redis.Cmd) error {
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// Not loaded yet, or any more after a restart: Run loads it.
		cmd = scripts.DeadLetter.Run(ctx, e.p.Client, []string{e.p.Stream, e.p.DeadLetterStream}, e.scriptArgs(d)...)
	}
	n, err := cmd.Int64()
	switch {
	case err != nil:
		return err
	case n == scripts.DeadLetterGone:
		return errEntryGone
	case n == scripts.DeadLetterOversize:
		d.dl.reason = wire.ReasonOversize
		d.dl.cause = fmt.Errorf("%w: the entry has more than %d fields or %d bytes (MaxPayloadBytes): moved without its fields",
			wire.ErrMalformed, wire.MaxEntryFields, e.p.MaxPayloadBytes)
		e.deadLettered(d)
	case n == scripts.DeadLetterMoved:
		e.deadLettered(d)
	default:
		e.log.Info("entry was no longer pending when it was to be dead-lettered (handled or trimmed meanwhile); nothing moved", slog.String("id", d.ID))
	}
	e.settled(d)
	return nil
}

// deadLettered records a completed move.
func (e *Engine) deadLettered(d *Delivery) {
	e.p.Stats.DeadLettered.Add(1)
	ev := EventOf(EventDeadLettered, d)
	ev.Reason, ev.Err = d.dl.reason, d.dl.cause
	e.observe(ev)
	e.log.Warn("dead-lettered entry",
		slog.String("id", d.ID), slog.String("reason", d.dl.reason),
		slog.String("operation_id", d.Msg.OperationID), slog.String("task_id", d.Msg.TaskID),
		slog.Int64("deliveries", d.Count), slog.String("err", logText(errText(d.dl.cause))),
		slog.String("dead_letter_stream", e.p.DeadLetterStream))
}

// finalTimeout is what remains until deadline, at least a millisecond.
func finalTimeout(now, deadline time.Time) time.Duration {
	return max(deadline.Sub(now), time.Millisecond)
}
