package completion

import (
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/scripts"
)

// Dead-letter reasons, written to the dl_reason field of a dead-letter
// entry.
const (
	// ReasonMalformed: the entry has no "data" field, or it is not a valid
	// message (not JSON, wrong types, missing ids).
	ReasonMalformed = "malformed"
	// ReasonOversize: the entry ("data" and any other fields) is larger
	// than Config.MaxPayloadBytes.
	ReasonOversize = "oversize"
	// ReasonTaskNotFound: the registry knows neither the operation id nor
	// the task id (under NotFoundDeadLetter).
	ReasonTaskNotFound = "task_not_found"
	// ReasonInvalidTask: the registry returned a task without TaskID,
	// SessionID or ToolCallID.
	ReasonInvalidTask = "invalid_task"
	// ReasonPermanent: the handler returned an error made by [Permanent].
	ReasonPermanent = "permanent_error"
	// ReasonMaxDeliveries: the entry was delivered Config.MaxDeliveries
	// times without success.
	ReasonMaxDeliveries = "max_deliveries"
)

// Fields a dead-letter entry carries besides the original entry's fields.
// The original fields are copied in their order, duplicates included; an
// original field whose name starts with "dl_" or "orig_" gets the prefix
// "orig_", which a redrive strips again, so that every name round-trips.
//
// A dead letter of reason "oversize" for an entry over
// Config.MaxPayloadBytes or MaxEntryFields holds none of the original
// fields: the entry is too big to copy. It holds DeadLetterSizeField,
// DeadLetterFieldsField and DeadLetterExcerptField instead, and cannot be
// redriven; the original stays in the source stream, under
// DeadLetterIDField, until the stream is trimmed.
const (
	DeadLetterReasonField     = "dl_reason"     // one of the Reason constants
	DeadLetterErrorField      = "dl_error"      // the error text, at most 1 KiB
	DeadLetterDeliveriesField = "dl_deliveries" // delivery count, decimal
	DeadLetterConsumerField   = "dl_consumer"   // the consumer that moved it
	DeadLetterGroupField      = "dl_group"      // the consumer group
	DeadLetterStreamField     = "dl_stream"     // the source stream
	DeadLetterIDField         = "dl_source_id"  // the entry id in the source stream
	DeadLetterTimeField       = "dl_time"       // RFC 3339 time, UTC, milliseconds
	DeadLetterSizeField       = "dl_size"       // oversize: the entry's bytes, decimal
	DeadLetterFieldsField     = "dl_fields"     // oversize: the entry's field count, decimal
	DeadLetterExcerptField    = "dl_excerpt"    // oversize: the first 256 bytes of its data field
	deadLetterFieldPrefix     = "dl_"
	// origFieldPrefix is what dead-lettering puts before an original
	// field's name that starts with "dl_" or "orig_" (see escapeFieldName
	// and originalField).
	origFieldPrefix         = "orig_"
	maxDeadLetterErrorBytes = 1024
	maxExcerptBytes         = 256
)

// MaxEntryFields is the most fields an entry may have. An entry with more is
// dead-lettered as "oversize", without its fields (see
// DeadLetterExcerptField): Redis's Lua cannot pass many more values to one
// command, and nothing a producer of this package writes comes near it.
const MaxEntryFields = 1000

// deadLetterReq is a dead-lettering the acker carries out.
type deadLetterReq struct {
	reason string
	cause  error
	meta   []any // the dl_ fields, dl_reason and dl_error first
	// given: the original fields travel with the request (fields) instead
	// of being copied by the script from the stream: the entry was deleted
	// from the stream, or the keys live on different nodes. Never set for
	// an oversize entry, whose fields are not written at all.
	given  bool
	fields []any
	added  bool // two-step move: the XADD is done, the XACK is not
}

// deadLetter hands d to the acker to be moved to the dead-letter stream with
// its reason and acknowledged; the acker batches these moves with the
// acknowledgements in one pipeline. Where the two keys share a node the move
// is one script that copies the entry's fields itself, so that no body
// travels through the client, and acknowledges last (a failed write
// acknowledges nothing); otherwise (a cluster without a shared hash tag) the
// dead letter is written first and acknowledged second, so a crash in
// between leaves a duplicate, never a loss. If Redis fails, the entry stays
// pending and is delivered again.
func (r *run) deadLetter(d *delivery, reason string, cause error) {
	if !r.current(d) { // its stream was deleted meanwhile
		r.forget(d)
		return
	}
	d.dl = &deadLetterReq{reason: reason, cause: cause, meta: r.deadLetterMeta(d, reason, cause)}
	r.ack(d)
}

// deadLettered records a completed move.
func (r *run) deadLettered(d *delivery) {
	reason, cause := d.dl.reason, d.dl.cause
	r.c.stats.deadLettered.Add(1)
	r.observe(Event{Kind: EventDeadLettered, EntryID: d.id, OperationID: d.msg.OperationID, TaskID: d.msg.TaskID,
		Deliveries: d.count, Reason: reason, Err: cause})
	r.log.Warn("dead-lettered entry",
		slog.String("id", d.id), slog.String("reason", reason),
		slog.String("operation_id", d.msg.OperationID), slog.String("task_id", d.msg.TaskID),
		slog.Int64("deliveries", d.count), slog.String("err", logText(errText(cause))),
		slog.String("dead_letter_stream", r.cfg.DeadLetterStream))
}

// deadLetterArgs returns the script arguments for d's move.
func (r *run) deadLetterArgs(d *delivery) []any {
	mode := scripts.ModeCopy
	if d.dl.given || d.bodyOversize {
		mode = scripts.ModeGiven
	}
	args := make([]any, 0, 7+len(d.dl.meta)+len(d.dl.fields))
	args = append(args, r.cfg.Group, d.id, r.cfg.DeadLetterMaxLen, MaxEntryFields, r.cfg.MaxPayloadBytes, mode, len(d.dl.meta))
	args = append(args, d.dl.meta...)
	if d.dl.given && !d.bodyOversize {
		args = append(args, d.dl.fields...)
	}
	return args
}

// giveFields makes d's move carry the entry's fields, as the consumer read
// them (their order is lost: go-redis hands them over as a map).
func (r *run) giveFields(d *delivery) {
	d.dl.given = true
	if d.bodyOversize {
		return
	}
	keys := make([]string, 0, len(d.values))
	for k := range d.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	d.dl.fields = make([]any, 0, 2*len(keys))
	for _, k := range keys {
		d.dl.fields = append(d.dl.fields, escapeFieldName(k), d.values[k])
	}
}

// deadLetterXAdd returns the XADD of d's dead letter, for the two-step move.
func (r *run) deadLetterXAdd(d *delivery) *redis.XAddArgs {
	if !d.dl.given {
		r.giveFields(d)
	}
	values := make([]any, 0, len(d.dl.fields)+len(d.dl.meta))
	values = append(append(values, d.dl.fields...), d.dl.meta...)
	a := &redis.XAddArgs{Stream: r.cfg.DeadLetterStream, Values: values}
	if r.cfg.DeadLetterMaxLen > 0 {
		a.MaxLen, a.Approx = r.cfg.DeadLetterMaxLen, true
	}
	return a
}

// atomicDeadLetter reports whether the move can be one script: always on a
// single node, and in a cluster when both keys hash to the same slot.
func (r *run) atomicDeadLetter() bool {
	return keys.TopologyOf(r.c.client).SameNode(r.cfg.Stream, r.cfg.DeadLetterStream)
}

// deadLetterMeta returns the dl_ fields of d's dead letter, dl_reason and
// dl_error first (the script may rewrite those two).
func (r *run) deadLetterMeta(d *delivery, reason string, cause error) []any {
	meta := make([]any, 0, 22)
	meta = append(meta,
		DeadLetterReasonField, reason,
		DeadLetterErrorField, truncate(errText(cause), maxDeadLetterErrorBytes),
		DeadLetterDeliveriesField, strconv.FormatInt(d.count, 10),
		DeadLetterConsumerField, r.cfg.Consumer,
		DeadLetterGroupField, r.cfg.Group,
		DeadLetterStreamField, r.cfg.Stream,
		DeadLetterIDField, d.id,
		DeadLetterTimeField, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	)
	if d.bodyOversize {
		data, _ := d.values[DataField].(string)
		meta = append(meta,
			DeadLetterSizeField, strconv.Itoa(entryBytes(d.values)),
			DeadLetterFieldsField, strconv.Itoa(len(d.values)),
			DeadLetterExcerptField, cutBytes(data, maxExcerptBytes))
	}
	return meta
}

// escapeFieldName returns the name an original field gets in a dead letter;
// originalField undoes it.
func escapeFieldName(name string) string {
	if strings.HasPrefix(name, deadLetterFieldPrefix) || strings.HasPrefix(name, origFieldPrefix) {
		return origFieldPrefix + name
	}
	return name
}

// cutBytes returns the first n bytes of s (not marked, possibly cutting a
// rune: an excerpt of untrusted data, as the dead-letter script cuts it).
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
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
