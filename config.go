package completion

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"github.com/streamrelay/completion/internal/keys"
)

// Defaults of the names, shared with the Python service the wire format
// comes from, so that both can share a stream, and of [Publish]'s trimming.
// The other defaults are given with each [Config] field; [Consumer.Config]
// returns them filled in.
const (
	DefaultStream = "chat:completions"
	DefaultGroup  = "chat_consumers"
	DefaultMaxLen = 10000
)

// The defaults of the Config fields that have one.
const (
	defaultBlock             = 5 * time.Second
	defaultBatchSize         = 500
	defaultConcurrency       = 16
	defaultClaimMinIdle      = 60 * time.Second
	defaultClaimInterval     = 5 * time.Second
	defaultMaxDeliveries     = 5
	defaultRetryBackoff      = time.Second
	defaultMaxRetryBackoff   = 30 * time.Second
	defaultAckDelay          = time.Millisecond
	defaultShutdownTimeout   = 30 * time.Second
	defaultStartTimeout      = 30 * time.Second
	defaultMaxPayloadBytes   = 1 << 20
	defaultMaxReadAheadBytes = 64 << 20
	defaultMaxIDBytes        = 512
	defaultMaxErrorBytes     = 64 << 10
	defaultErrorBackoff      = 100 * time.Millisecond
	defaultMaxErrorBackoff   = 10 * time.Second
	defaultStaleConsumerAge  = time.Hour
)

// NoStartTimeout, as Config.StartTimeout, makes Run wait for Redis for as
// long as its context lasts.
const NoStartTimeout = time.Duration(math.MaxInt64)

// minClaimMinIdle is the shortest Config.ClaimMinIdle accepted: below it,
// an entry a consumer is about to acknowledge, or whose lease is due, would
// be taken over by another.
const minClaimMinIdle = 100 * time.Millisecond

// Config configures a [Consumer]. It is taken by value: later changes to the
// caller's copy have no effect. A zero field means its default, given at the
// end of each field's comment.
type Config struct {
	// Stream is the key of the Redis stream to read. Default DefaultStream.
	Stream string

	// Group is the consumer group. Every pod that should share the work uses
	// the same group. Default DefaultGroup.
	Group string

	// Consumer is this consumer's name within the group. It must be unique
	// among live consumers and stable for the consumer's lifetime; pending
	// entries are owned by this name. Default: host name, process id and a
	// random suffix, fixed when NewConsumer is called.
	Consumer string

	// DeadLetterStream receives entries that cannot be handled, with the
	// reason. Default DeadLetterStreamFor(Stream): "{chat:completions}:dead"
	// for "chat:completions", a key in the same Redis Cluster slot as the
	// stream, so that moving an entry there is one atomic script.
	DeadLetterStream string

	// Partitions splits the stream into this many partition streams (see
	// PartitionStream and WithPartitions); on Redis Cluster they spread
	// over the masters. The consumers of the group share the partitions
	// out: each partition is read by one consumer at a time, its owner, so
	// that with OrderByTask a task's completions are handled in order
	// however many consumers run. Each consumer owns its fair share,
	// ceil(Partitions / consumers running), and hands partitions back
	// (after their running handlers finish) when consumers join; a
	// partition whose owner died is taken over after ClaimMinIdle, with
	// what the owner left pending handled first. Concurrency bounds the
	// handlers running at once over all the partitions a consumer owns. An
	// owner that cannot renew its ownership stops reading the partition and
	// cancels its handlers' context before the ownership can expire (a
	// quarter of ClaimMinIdle before, by a timer that does not wait for
	// Redis), so order holds across owners as long as handlers honour that
	// cancellation. Coordination uses the member set "<Stream>:members:<Group>"
	// and an owner key per partition, "<partition>:owner:<Group>", renewed
	// every LeaseInterval. Unless DeadLetterStream is set, each partition has
	// its own dead-letter stream in its slot. The Stream name must not carry
	// a {hash tag}. Default 1: the stream itself, as the Python side writes
	// it, read by every consumer of the group at once.
	Partitions int

	// DeadLetterMaxLen trims the dead-letter stream with MAXLEN ~ on every
	// write. Zero means no trimming: dead letters are kept until someone
	// deletes them. Default 0.
	DeadLetterMaxLen int64

	// Block is how long one XREADGROUP waits for new entries. It must be at
	// least 1ms: go-redis turns shorter values into BLOCK 0, which waits
	// forever. Cancelling Run's context interrupts the wait on a
	// *redis.Client or *redis.ClusterClient (or a client that embeds one).
	// Default 5s.
	Block time.Duration

	// BatchSize is the most entries one XREADGROUP or XAUTOCLAIM brings in
	// (COUNT) and the most acknowledgements sent in one XACK. Default
	// 500.
	BatchSize int

	// MaxReadAheadBytes bounds the memory the consumer holds in entries
	// read and not yet acknowledged: it reads no more while that much is
	// held. Redis bounds a reply by count, not bytes, so each read is
	// bounded too. With a client that tells its options (a *redis.Client,
	// Sentinel's failover client, a *redis.ClusterClient), the blocking
	// read of new entries runs on a connection of the consumer's own that
	// cuts a reply off once it outgrows the budget's free part; the entries
	// of a cut reply are pending for this consumer and are taken from its
	// pending list instead. Those reads are planned at the size of the
	// entries seen lately (up to BatchSize of small entries). Other reads
	// (the own pending list, reclaims, and every read with other clients)
	// ask for no more entries than the free part would hold if each were as
	// large as MaxPayloadBytes allows (64 at the defaults). Entries over
	// MaxPayloadBytes (dead-lettered without their bodies) can be far
	// larger, so reads also start at four entries, fall to one after a read
	// brings entries larger than planned, and grow fourfold after each full
	// read. A burst of large entries slows reading instead of growing the
	// heap. Default 64 MiB.
	MaxReadAheadBytes int64

	// Concurrency is the most handlers that run at once. Default
	// 16.
	Concurrency int

	// OrderByTask, when true, hands entries of the same task id to the
	// handler one at a time in stream order, while different tasks still run
	// in parallel. Without Partitions the order holds within this consumer
	// only: several consumers of the group may split one task's entries
	// between them. With Partitions > 1 it holds across the group, since a
	// task's entries are all in one partition, read by one consumer at a
	// time. Either way a failed entry waits for its retry while later
	// entries of the task go ahead. Default false.
	OrderByTask bool

	// ClaimMinIdle is how long an entry must sit unacknowledged before
	// another consumer may take it over with XAUTOCLAIM (the Python side
	// uses 60 s). A consumer that holds an entry longer, because its handler
	// is slow, renews its claim every LeaseInterval so that it is not taken
	// away; one whose claim may have lapsed while it waited (a paused
	// process) checks that it still owns the entry before its handler
	// starts. It must be at least 100ms and at least ten times AckDelay.
	// Default 60s.
	ClaimMinIdle time.Duration

	// ClaimInterval is how often the consumer looks for stale entries of
	// other consumers with XAUTOCLAIM. Default 5s.
	ClaimInterval time.Duration

	// LeaseInterval is how often the consumer renews its claim on the
	// entries it holds, and announces itself in the group's member set. It
	// must be at most half of ClaimMinIdle. Default ClaimMinIdle / 3.
	LeaseInterval time.Duration

	// MaxDeliveries is how many times an entry is delivered before it is
	// dead-lettered with reason "max_deliveries". Default
	// 5.
	MaxDeliveries int

	// RetryBackoff is the wait before an entry whose handler failed is
	// delivered again; it doubles with every delivery up to MaxRetryBackoff.
	// Default 1s.
	RetryBackoff time.Duration

	// MaxRetryBackoff caps RetryBackoff's growth. Default
	// 30s.
	MaxRetryBackoff time.Duration

	// NotFound says what happens to an entry whose task is unknown. Default
	// NotFoundDeadLetter.
	NotFound NotFoundPolicy

	// TrustOperationID hands a completion to the handler also when its task
	// id and the id of the task its operation id names are both set and
	// differ, as the Python consumer does (it looks tasks up by operation id
	// first). By default such an entry is dead-lettered with reason
	// "task_mismatch": an entry that names one task's operation and another
	// task could complete a task it does not belong to. Set it only when
	// producers put another id than the task's in task_id. Default false.
	TrustOperationID bool

	// RequiredTaskFields are the Task fields, besides TaskID, that a task
	// must have for its completions to be handed to the handler, by their
	// Go names (see [Task.Require]); a completion of a task that lacks one
	// is dead-lettered with reason "invalid_task". Give the registry the
	// same list (MemoryRegistry.RequiredFields,
	// redisregistry.Config.RequiredFields), so that it refuses such tasks
	// when they are registered. An empty, non-nil list requires TaskID
	// only. Default: SessionID and ToolCallID, the Python service's rule.
	RequiredTaskFields []string

	// MaxPayloadBytes is the largest entry the consumer decodes: its "data"
	// field, and with other fields (WithField) their names and values
	// together; larger entries, and entries with more than 1000 fields, are
	// dead-lettered with reason "oversize", without their fields (see
	// DeadLetterReasonField). Default 1 MiB.
	MaxPayloadBytes int

	// MaxIDBytes is the longest operation id or task id accepted; entries
	// with longer ids are dead-lettered with reason "oversize". Default
	// 512 bytes.
	MaxIDBytes int

	// MaxErrorBytes is the longest error text accepted; entries with a
	// longer one are dead-lettered with reason "oversize". Default
	// 64 KiB.
	MaxErrorBytes int

	// AckDelay is the longest an acknowledgement waits to be sent together
	// with others in one XACK. Default 1ms.
	AckDelay time.Duration

	// ShutdownTimeout is how long Run waits, after its context is
	// cancelled, for running handlers to finish. Then their context is
	// cancelled. Default 30s.
	ShutdownTimeout time.Duration

	// StartTimeout bounds how long Run tries to reach Redis and create (or
	// find) its group when it starts: if it cannot within StartTimeout,
	// Run returns an error wrapping [ErrStartTimeout] and the last Redis
	// error (a refused dial, a wrong password, a TLS failure), instead of
	// retrying quietly forever. Once started, Redis errors never end Run.
	// NoStartTimeout waits for as long as Run's context lasts. Default
	// 30s.
	StartTimeout time.Duration

	// ErrorBackoff is the first wait after a Redis error; waits double, with
	// jitter, up to MaxErrorBackoff while errors go on. Default
	// 100ms.
	ErrorBackoff time.Duration

	// MaxErrorBackoff caps ErrorBackoff's growth. Default
	// 10s.
	MaxErrorBackoff time.Duration

	// StaleConsumerAge is how long another consumer of the group must have
	// been idle, holding no pending entries, before this consumer deletes it
	// from the group. A consumer that is alive (it announces itself in the
	// group's member set every LeaseInterval) is never deleted, and the
	// check and the delete are one atomic step, so a consumer that holds
	// entries is never deleted either. Default 1h.
	StaleConsumerAge time.Duration

	// DedupTTL, when positive, turns on duplicate suppression: the consumer
	// records each operation id it handed over successfully for this long
	// (the record is written before the XACK; if it cannot be, the entry
	// stays pending until it can), and acknowledges a redelivered
	// completion of a recorded operation without calling the handler
	// again. It is a check before the handler, not a lock: two deliveries
	// of one operation handled at the same moment (the producer published
	// it twice, and both are read in one batch) can both run; OrderByTask
	// serialises them within a consumer. Default 0 (off).
	DedupTTL time.Duration

	// DedupPrefix is the key prefix of duplicate-suppression records.
	// Default Stream + ":done:".
	DedupPrefix string

	// Logger receives the consumer's logs. Untrusted text (error texts,
	// panic values) is length-capped and escaped; results are never
	// logged. Default slog.Default().
	Logger *slog.Logger

	// Observer, when set, receives an [Event] for everything that happens
	// to an entry, e.g. to feed metrics. Default nil.
	Observer Observer
}

// withDefaults returns a copy of c with defaults filled in and checks it.
// Every error wraps ErrInvalidConfig and names the field.
func (c Config) withDefaults() (Config, error) {
	for _, step := range []func(*Config) error{
		(*Config).defaultNames,
		(*Config).defaultSizes,
		(*Config).defaultDurations,
		(*Config).checkRelations,
		(*Config).defaultRest,
	} {
		if err := step(&c); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

// bad returns the error for field, holding v, for why.
func bad(field string, v any, why string) error {
	return fmt.Errorf("%w: %s is %v; %s", ErrInvalidConfig, field, v, why)
}

func (c *Config) defaultNames() error {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Consumer == "" {
		c.Consumer = defaultConsumerName()
	}
	if err := defaultInt(&c.Partitions, 1, "Partitions"); err != nil {
		return err
	}
	if err := keys.CheckPartitions(c.Stream, c.Partitions); err != nil {
		return bad("Partitions", c.Partitions, err.Error())
	}
	if c.DeadLetterStream == "" {
		c.DeadLetterStream = DeadLetterStreamFor(c.Stream)
	}
	if c.DeadLetterStream == c.Stream {
		return bad("DeadLetterStream", c.DeadLetterStream, "it must differ from Stream")
	}
	if c.DedupPrefix == "" {
		c.DedupPrefix = c.Stream + ":done:"
	}
	return nil
}

func (c *Config) defaultSizes() error {
	for _, f := range []struct {
		p    *int
		def  int
		name string
	}{
		{&c.BatchSize, defaultBatchSize, "BatchSize"},
		{&c.Concurrency, defaultConcurrency, "Concurrency"},
		{&c.MaxDeliveries, defaultMaxDeliveries, "MaxDeliveries"},
		{&c.MaxPayloadBytes, defaultMaxPayloadBytes, "MaxPayloadBytes"},
		{&c.MaxIDBytes, defaultMaxIDBytes, "MaxIDBytes"},
		{&c.MaxErrorBytes, defaultMaxErrorBytes, "MaxErrorBytes"},
	} {
		if err := defaultInt(f.p, f.def, f.name); err != nil {
			return err
		}
	}
	switch {
	case c.MaxReadAheadBytes == 0:
		c.MaxReadAheadBytes = defaultMaxReadAheadBytes
	case c.MaxReadAheadBytes < 0:
		return bad("MaxReadAheadBytes", c.MaxReadAheadBytes, "it must be positive (zero means the default)")
	}
	if c.DeadLetterMaxLen < 0 {
		return bad("DeadLetterMaxLen", c.DeadLetterMaxLen, "it must be 0 (no trimming) or positive")
	}
	return nil
}

func (c *Config) defaultDurations() error {
	switch {
	case c.Block == 0:
		c.Block = defaultBlock
	case c.Block < time.Millisecond:
		return bad("Block", c.Block, "it must be at least 1ms (go-redis sends shorter values as BLOCK 0, which waits forever)")
	}
	for _, d := range []struct {
		name string
		p    *time.Duration
		def  time.Duration
	}{
		{"ClaimMinIdle", &c.ClaimMinIdle, defaultClaimMinIdle},
		{"ClaimInterval", &c.ClaimInterval, defaultClaimInterval},
		{"RetryBackoff", &c.RetryBackoff, defaultRetryBackoff},
		{"MaxRetryBackoff", &c.MaxRetryBackoff, defaultMaxRetryBackoff},
		{"AckDelay", &c.AckDelay, defaultAckDelay},
		{"ShutdownTimeout", &c.ShutdownTimeout, defaultShutdownTimeout},
		{"StartTimeout", &c.StartTimeout, defaultStartTimeout},
		{"ErrorBackoff", &c.ErrorBackoff, defaultErrorBackoff},
		{"MaxErrorBackoff", &c.MaxErrorBackoff, defaultMaxErrorBackoff},
		{"StaleConsumerAge", &c.StaleConsumerAge, defaultStaleConsumerAge},
	} {
		switch {
		case *d.p == 0:
			*d.p = d.def
		case *d.p < 0:
			return bad(d.name, *d.p, "it must be positive (zero means the default)")
		}
	}
	if c.LeaseInterval == 0 {
		c.LeaseInterval = c.ClaimMinIdle / 3
	}
	switch {
	case c.DedupTTL < 0:
		return bad("DedupTTL", c.DedupTTL, "it must be 0 (off) or positive")
	case c.DedupTTL > 0 && c.DedupTTL < time.Millisecond:
		return bad("DedupTTL", c.DedupTTL, "it must be at least 1ms")
	}
	return nil
}

// checkRelations checks the values that must fit together.
func (c *Config) checkRelations() error {
	switch {
	case c.ClaimMinIdle < minClaimMinIdle:
		return bad("ClaimMinIdle", c.ClaimMinIdle, fmt.Sprintf("it must be at least %v: another consumer would take entries over that this one is about to acknowledge", minClaimMinIdle))
	case c.ClaimMinIdle < 10*c.AckDelay:
		return bad("ClaimMinIdle", c.ClaimMinIdle, fmt.Sprintf("it must be at least ten times AckDelay (%v)", c.AckDelay))
	case c.LeaseInterval < 0 || c.LeaseInterval > c.ClaimMinIdle/2:
		// Renewals reach an entry up to 1.5 LeaseInterval after it was last
		// touched; that must stay under ClaimMinIdle with room to spare.
		return bad("LeaseInterval", c.LeaseInterval, fmt.Sprintf("it must be positive and at most half of ClaimMinIdle (%v)", c.ClaimMinIdle))
	case c.MaxRetryBackoff < c.RetryBackoff:
		return bad("MaxRetryBackoff", c.MaxRetryBackoff, fmt.Sprintf("it must not be shorter than RetryBackoff (%v)", c.RetryBackoff))
	case c.MaxErrorBackoff < c.ErrorBackoff:
		return bad("MaxErrorBackoff", c.MaxErrorBackoff, fmt.Sprintf("it must not be shorter than ErrorBackoff (%v)", c.ErrorBackoff))
	case c.NotFound < NotFoundDeadLetter || c.NotFound > NotFoundDrop:
		return bad("NotFound", int(c.NotFound), "it must be NotFoundDeadLetter, NotFoundRetry or NotFoundDrop")
	case c.MaxReadAheadBytes < int64(c.MaxPayloadBytes):
		return bad("MaxReadAheadBytes", c.MaxReadAheadBytes, fmt.Sprintf("it must hold at least one entry of MaxPayloadBytes (%d)", c.MaxPayloadBytes))
	}
	return nil
}

func (c *Config) defaultRest() error {
	if c.RequiredTaskFields == nil {
		c.RequiredTaskFields = defaultRequiredTaskFields
	} else if err := checkRequiredFields(c.RequiredTaskFields); err != nil {
		return bad("RequiredTaskFields", c.RequiredTaskFields, err.Error())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func defaultInt(p *int, def int, name string) error {
	switch {
	case *p == 0:
		*p = def
	case *p < 0:
		return fmt.Errorf("%w: %s is %d; it must be positive (zero means the default)", ErrInvalidConfig, name, *p)
	}
	return nil
}

// defaultConsumerName returns "host-pid-random": unique per process, and
// readable in XINFO CONSUMERS.
func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "consumer"
	}
	host = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return -1
		}
		return r
	}, host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// DeadLetterStreamFor returns the default dead-letter stream of stream: the
// stream's name with ":dead", hash-tagged so that both keys live in the same
// Redis Cluster slot. A stream name that has a hash tag already keeps it:
// "{orders}:done" gives "{orders}:done:dead", and "chat:completions" gives
// "{chat:completions}:dead". A name with braces but no usable tag just gets
// the suffix, and may land in another slot.
func DeadLetterStreamFor(stream string) string {
	return keys.DeadLetterStream(stream)
}
