package engine

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis bounds an XREADGROUP reply by COUNT, never by bytes, so a read
// planned for small entries could bring a burst of large ones into memory
// at once. Where it can, the blocking reader therefore reads on a
// connection of a private client whose dialer counts the bytes each reply
// brings: once a reply outgrows the read-ahead budget's free part, the
// connection fails the read (errReplyCapped) and is closed, and the reader
// takes the entries from its own pending list instead, planned as if each
// were as large as MaxPayloadBytes. The entries the cut reply carried are
// pending for this consumer, so nothing is lost; what was read of the reply
// is garbage. With the cap, reads can be planned at the size of the entries
// actually seen (up to BatchSize of them) without the budget's bound
// depending on the plan.

// errReplyCapped is the error of a capped read whose reply outgrew its cap.
var errReplyCapped = errors.New("engine: the reply outgrew the read-ahead budget's free part; re-reading its entries from the pending list")

// replySlack is what a cap allows beyond the budget's free part: the
// protocol's framing, and a connection's handshake when the read dials.
const replySlack = 64 << 10

// byteCap counts the bytes read on the private client's connections while
// armed, and fails the read that goes over the limit.
type byteCap struct {
	limit atomic.Int64 // 0: disarmed
	read  atomic.Int64
}

// arm starts counting a reply of at most limit bytes.
func (c *byteCap) arm(limit int64) {
	c.read.Store(0)
	c.limit.Store(max(limit, 1))
}

// disarm stops counting.
func (c *byteCap) disarm() { c.limit.Store(0) }

// cappedConn is a connection whose reads count against a byteCap.
type cappedConn struct {
	net.Conn
	counter *byteCap
}

func (c *cappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if limit := c.counter.limit.Load(); limit > 0 && c.counter.read.Add(int64(n)) > limit {
		return 0, errReplyCapped
	}
	return n, err
}

// optionsOf is a client that tells its options (*redis.Client, and the
// node clients of a cluster).
type optionsOf interface {
	Options() *redis.Options
}

// newCappedClient returns a private client with one connection to where
// o's client connects (through o's dialer: its address, TLS, Sentinel's
// current master), reading through counter. It does not retry: a read it
// fails is the reader's to recover.
func newCappedClient(o *redis.Options, counter *byteCap) *redis.Client {
	opts := *o
	// A config of its own: go-redis writes to the client's (under a lock
	// of its own) when a handshake falls back, so it must not be read here.
	// Maintenance notifications would only hand the connection over early;
	// the reader recovers from a dropped connection anyway.
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	dial := o.Dialer
	if dial == nil {
		dial = redis.NewDialer(o)
	}
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cappedConn{Conn: conn, counter: counter}, nil
	}
	// State of the client's own, not settings: a copy would share it. A
	// cut read is no failure for the client's limiter (circuit breaker),
	// and the reader needs no push processor or client-side cache.
	opts.Limiter, opts.PushNotificationProcessor = nil, nil
	opts.ClientSideCache, opts.ClientSideCacheConfig = nil, nil
	// Options() holds timeouts NewClient has normalised (-1 for -2, no
	// deadlines; 0 for -1, none), which it would normalise again.
	opts.ReadTimeout, opts.WriteTimeout = unnormalised(o.ReadTimeout), unnormalised(o.WriteTimeout)
	opts.PoolSize, opts.MinIdleConns, opts.MaxIdleConns, opts.MaxActiveConns = 1, 0, 1, 1
	opts.PipelinePoolSize = -1
	opts.MaxRetries = -1
	return redis.NewClient(&opts)
}

// unnormalised returns the timeout setting that go-redis normalises to d.
func unnormalised(d time.Duration) time.Duration {
	switch d {
	case -1:
		return -2
	case 0:
		return -1
	}
	return d
}
