package taskstream

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/streamrelay/completion"
)

// Defaults applied by [NewHub] to zero [HubConfig] fields.
const (
	DefaultBuffer              = 256
	DefaultBufferBytes         = 1 << 20
	DefaultReadCount           = 100
	DefaultReaders             = 2
	DefaultReadBatch           = 64
	DefaultHealthCheckInterval = 5 * time.Second
	DefaultResyncInterval      = time.Minute
	DefaultErrorBackoff        = 100 * time.Millisecond
	DefaultMaxErrorBackoff     = 5 * time.Second
)

// MaxReaders is the most readers a hub may have.
const MaxReaders = 64

// HubConfig configures a [Hub]. A zero field takes its default.
type HubConfig struct {
	// Buffer is how many events a subscription holds that its reader has
	// not taken yet. While a subscription replays history the hub reads
	// only as much as fits and reads on when Next has taken half; a live
	// subscription whose buffer is full when new events arrive is cut off
	// with [ErrSlowSubscriber]. Default: DefaultBuffer (256).
	Buffer int

	// BufferBytes bounds the same buffer by the events' size (their JSON):
	// it counts as full once it holds this many bytes (a single event of
	// any size always fits in an empty buffer). Default: DefaultBufferBytes
	// (1 MiB).
	BufferBytes int

	// ReadCount is the most entries one XRANGE of a task's stream returns
	// (at most Buffer). Default: DefaultReadCount (100), or Buffer if
	// smaller.
	ReadCount int

	// Readers is how many pipelines may run at once: the readers'
	// pipelines of XRANGEs, and the health check's canary, which waits for
	// one of the same slots. With the pub/sub connection, the hub uses at
	// most Readers+1 connections (per cluster node, where go-redis may
	// keep one more of its own for the topology), whatever the number of
	// subscriptions. From 1 to MaxReaders. Default: DefaultReaders (2).
	Readers int

	// ReadBatch is the most tasks one pipeline reads. Default:
	// DefaultReadBatch (64).
	ReadBatch int

	// HealthCheckInterval is how often the hub checks its pub/sub
	// connection: it publishes on a channel of its own through the
	// client's ordinary connections and reconnects (then re-reads every
	// task) if the connection did not hear it by the next check, which
	// catches a connection left on a demoted master after a Sentinel
	// failover; and a connection silent for an interval gets a PING,
	// unanswered for another it is replaced. At least 100ms.
	// Default: DefaultHealthCheckInterval (5s).
	HealthCheckInterval time.Duration

	// ResyncInterval is how often the hub re-reads every subscribed task
	// although no notification came: a safety net for writers that append
	// without publishing (one that crashed between XADD and PUBLISH, say).
	// At least a second. Default: DefaultResyncInterval (1m).
	ResyncInterval time.Duration

	// ErrorBackoff and MaxErrorBackoff bound the wait after a failed Redis
	// call, doubling from the first to the second. Defaults:
	// DefaultErrorBackoff (100ms) and DefaultMaxErrorBackoff (5s).
	ErrorBackoff, MaxErrorBackoff time.Duration

	// Logger receives the hub's warnings (Redis errors, reconnects), at
	// most one per kind every 10 seconds. Default: slog.Default().
	Logger *slog.Logger
}

// withDefaults fills in the defaults of zero fields and checks the rest.
func (cfg HubConfig) withDefaults() (HubConfig, error) {
	invalid := func(field string, v any, want string) error {
		return fmt.Errorf("%w: HubConfig.%s is %v; %s", completion.ErrInvalidConfig, field, v, want)
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"Buffer", &cfg.Buffer, DefaultBuffer},
		{"BufferBytes", &cfg.BufferBytes, DefaultBufferBytes},
		{"Readers", &cfg.Readers, DefaultReaders},
		{"ReadBatch", &cfg.ReadBatch, DefaultReadBatch},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 1 {
			return cfg, invalid(f.name, *f.v, "it must be positive (zero means the default)")
		}
	}
	if cfg.Readers > MaxReaders {
		return cfg, invalid("Readers", cfg.Readers, fmt.Sprintf("it must be from 1 to %d", MaxReaders))
	}
	if cfg.ReadCount == 0 {
		cfg.ReadCount = min(DefaultReadCount, cfg.Buffer)
	}
	if cfg.ReadCount < 1 || cfg.ReadCount > cfg.Buffer {
		return cfg, invalid("ReadCount", cfg.ReadCount, fmt.Sprintf("it must be from 1 to Buffer (%d)", cfg.Buffer))
	}
	for _, f := range []struct {
		name     string
		v        *time.Duration
		def, min time.Duration
	}{
		{"HealthCheckInterval", &cfg.HealthCheckInterval, DefaultHealthCheckInterval, 100 * time.Millisecond},
		{"ResyncInterval", &cfg.ResyncInterval, DefaultResyncInterval, time.Second},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < f.min {
			return cfg, invalid(f.name, *f.v, fmt.Sprintf("it must be at least %v", f.min))
		}
	}
	if cfg.ErrorBackoff == 0 {
		cfg.ErrorBackoff = DefaultErrorBackoff
	}
	if cfg.MaxErrorBackoff == 0 {
		cfg.MaxErrorBackoff = max(DefaultMaxErrorBackoff, cfg.ErrorBackoff)
	}
	if cfg.ErrorBackoff < 0 {
		return cfg, invalid("ErrorBackoff", cfg.ErrorBackoff, "it must be positive")
	}
	if cfg.MaxErrorBackoff < cfg.ErrorBackoff {
		return cfg, invalid("MaxErrorBackoff", cfg.MaxErrorBackoff, fmt.Sprintf("it must be at least ErrorBackoff (%v)", cfg.ErrorBackoff))
	}
	return cfg, nil
}
