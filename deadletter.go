package completion

import (
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
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

// Fields a dead-letter entry carries besides the original entry's fields,
// which are copied unchanged (an original field whose name starts with
// "dl_" is renamed with the prefix "orig_").
const (
	DeadLetterReasonField     = "dl_reason"     // one of the Reason constants
	DeadLetterErrorField      = "dl_error"      // the error text, at most 1 KiB
	DeadLetterDeliveriesField = "dl_deliveries" // delivery count, decimal
	DeadLetterConsumerField   = "dl_consumer"   // the consumer that moved it
	DeadLetterGroupField      = "dl_group"      // the consumer group
	DeadLetterStreamField     = "dl_stream"     // the source stream
	DeadLetterIDField         = "dl_source_id"  // the entry id in the source stream
	DeadLetterTimeField       = "dl_time"       // RFC 3339 time, UTC, milliseconds
	deadLetterFieldPrefix     = "dl_"
	// origDeadLetterFieldPrefix is what dead-lettering renames an original
	// field's "dl_" prefix to (see deadLetterFields and originalField).
	origDeadLetterFieldPrefix = "orig_" + deadLetterFieldPrefix
	maxDeadLetterErrorBytes   = 1024
)

// deadLetterScript moves an entry atomically: acknowledge it and, if it was
// still pending (no one else handled it meanwhile), add it to the
// dead-letter stream. Used when both keys live on one node.
//
// KEYS[1] stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] id,
// ARGV[3] MAXLEN (0 = none), ARGV[4..] field/value pairs.
var deadLetterScript = redis.NewScript(`
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then return 0 end
local args = {'XADD', KEYS[2]}
if tonumber(ARGV[3]) > 0 then
  table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, ARGV[3])
end
table.insert(args, '*')
for i = 4, #ARGV do table.insert(args, ARGV[i]) end
redis.call(unpack(args))
return 1
`)

// deadLetterReq is a dead-lettering the acker carries out.
type deadLetterReq struct {
	reason string
	cause  error
	fields []any
	added  bool // two-step move: the XADD is done, the XACK is not
}

// deadLetter hands d to the acker to be moved to the dead-letter stream with
// its reason and acknowledged; the acker batches these moves with the
// acknowledgements in one pipeline. Where the two keys share a node the move
// is one script (dead-letter only if still pending, and acknowledge);
// otherwise (a cluster without a shared hash tag) the dead letter is written
// first and acknowledged second, so a crash in between leaves a duplicate,
// never a loss. If Redis fails, the entry stays pending and is delivered
// again.
func (r *run) deadLetter(d *delivery, reason string, cause error) {
	if !r.current(d) { // its stream was deleted meanwhile
		r.forget(d)
		return
	}
	d.dl = &deadLetterReq{reason: reason, cause: cause, fields: r.deadLetterFields(d, reason, cause)}
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
	args := make([]any, 0, 3+len(d.dl.fields))
	args = append(args, r.cfg.Group, d.id, r.cfg.DeadLetterMaxLen)
	return append(args, d.dl.fields...)
}

// deadLetterXAdd returns the XADD of d's dead letter, for the two-step move.
func (r *run) deadLetterXAdd(d *delivery) *redis.XAddArgs {
	a := &redis.XAddArgs{Stream: r.cfg.DeadLetterStream, Values: d.dl.fields}
	if r.cfg.DeadLetterMaxLen > 0 {
		a.MaxLen, a.Approx = r.cfg.DeadLetterMaxLen, true
	}
	return a
}

// atomicDeadLetter reports whether the move can be one script: always on a
// single node, and in a cluster when both keys hash to the same slot.
func (r *run) atomicDeadLetter() bool {
	switch r.c.client.(type) {
	case *redis.Client, *redis.Conn:
		return true
	}
	return keySlot(r.cfg.Stream) == keySlot(r.cfg.DeadLetterStream)
}

func (r *run) deadLetterFields(d *delivery, reason string, cause error) []any {
	keys := make([]string, 0, len(d.values))
	for k := range d.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := make([]any, 0, 2*len(keys)+16)
	for _, k := range keys {
		name := k
		if strings.HasPrefix(k, deadLetterFieldPrefix) {
			name = "orig_" + k // origDeadLetterFieldPrefix + the rest
		}
		fields = append(fields, name, d.values[k])
	}
	return append(fields,
		DeadLetterReasonField, reason,
		DeadLetterErrorField, truncate(errText(cause), maxDeadLetterErrorBytes),
		DeadLetterDeliveriesField, strconv.FormatInt(d.count, 10),
		DeadLetterConsumerField, r.cfg.Consumer,
		DeadLetterGroupField, r.cfg.Group,
		DeadLetterStreamField, r.cfg.Stream,
		DeadLetterIDField, d.id,
		DeadLetterTimeField, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	)
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

// keySlot returns the Redis Cluster hash slot of key (CRC16 of the key, or
// of its {hash tag}, mod 16384).
func keySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
