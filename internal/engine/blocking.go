package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The client capabilities the blocking reader uses. They are interfaces,
// not concrete types, so that a client wrapping a *redis.Client or a
// *redis.ClusterClient by embedding keeps them.
type (
	// connOpener is a single-node client (*redis.Client, also Sentinel's
	// failover client): it can give a connection of its own.
	connOpener interface {
		Conn() *redis.Conn
	}
	// masterFinder is a cluster client: it names the node of a key.
	masterFinder interface {
		MasterForKey(ctx context.Context, key string) (*redis.Client, error)
	}
	// unblocker sends CLIENT UNBLOCK.
	unblocker interface {
		ClientUnblock(ctx context.Context, id int64) *redis.IntCmd
	}
)

// blockingReader runs the engine's blocking XREADGROUP on a connection of
// its own whose CLIENT ID it knows, so that shutdown can end the wait at
// once with CLIENT UNBLOCK from another connection instead of waiting out the
// BLOCK (go-redis does not interrupt a blocked read when its context is
// cancelled). It needs a client with one of the capabilities above; with
// others, or servers without CLIENT ID (miniredis), it reads through the
// client itself and shutdown waits for the read to time out: at most Block.
// When the client (or, in a cluster, the key's node) tells its Options, the
// connection is one of a private client dialled with them, whose replies
// are capped (capped.go).
//
// read, open and close are called by the reader's goroutine only; target
// may be called from any goroutine.
type blockingReader struct {
	client Client
	stream string
	conn   *redis.Conn // nil: read through client
	plain  bool        // no dedicated connection to be had: read through client
	// priv is the private client conn belongs to, when the client tells
	// its options: its reads are capped (see capped.go). Nil when conn is
	// one of the client's own.
	priv    *redis.Client
	counter byteCap

	mu    sync.Mutex // guards owner and id, which target reads
	owner unblocker  // the node conn belongs to, to send CLIENT UNBLOCK
	id    int64
}

// interruptible reports whether a client offers what the dedicated,
// interruptible read needs.
func interruptible(c Client) bool {
	switch c.(type) {
	case connOpener, masterFinder:
		return true
	}
	return false
}

// target returns where to send CLIENT UNBLOCK: the node and the client id
// of the dedicated connection, or a nil node when there is none.
func (b *blockingReader) target() (unblocker, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owner, b.id
}

// capped reports whether the next read goes through the capped private
// client (then its reply is bounded by the limit read is given).
func (b *blockingReader) capped() bool { return b.conn != nil && b.priv != nil }

// read issues XREADGROUP, opening the dedicated connection first if there is
// none yet. openErr is an error opening it (the read then went through the
// client). On the capped connection a reply over limit bytes fails with
// errReplyCapped.
func (b *blockingReader) read(ctx context.Context, a *redis.XReadGroupArgs, limit int64) (res []redis.XStream, openErr, err error) {
	if b.conn == nil && !b.plain {
		openErr = b.open(ctx)
	}
	if b.conn == nil {
		res, err = b.client.XReadGroup(ctx, a).Result()
		return res, openErr, err
	}
	if b.priv != nil {
		b.counter.arm(limit)
	}
	res, err = b.conn.XReadGroup(ctx, a).Result()
	b.counter.disarm()
	if err != nil && !errors.Is(err, redis.Nil) && !isNoGroup(err) {
		// The connection may be broken or, in a cluster, the slot may have
		// moved (MOVED, ASK, CLUSTERDOWN: a dedicated connection does not
		// follow redirections): start afresh, on the key's current master.
		b.close()
	}
	return res, nil, err
}

// open opens the dedicated connection. On failure the read goes through the
// client; a server that refuses CLIENT ID (miniredis, an ACL without it) is
// not asked again, other errors are returned for the caller to report.
func (b *blockingReader) open(ctx context.Context) error {
	var node *redis.Client
	switch c := b.client.(type) {
	case masterFinder:
		n, err := c.MasterForKey(ctx, b.stream)
		if err != nil {
			return err // read through the cluster client this time
		}
		node = n
	case connOpener:
		u, ok := b.client.(unblocker)
		if !ok {
			b.plain = true
			return nil
		}
		if o, ok := b.client.(optionsOf); ok {
			return b.adoptCapped(ctx, o.Options(), u)
		}
		return b.adopt(ctx, c.Conn(), u)
	default:
		b.plain = true
		return nil
	}
	return b.adoptCapped(ctx, node.Options(), node)
}

// adoptCapped opens the dedicated connection on a private client with o's
// settings, whose replies are capped (see capped.go); node is where to
// send CLIENT UNBLOCK.
func (b *blockingReader) adoptCapped(ctx context.Context, o *redis.Options, node unblocker) error {
	priv := newCappedClient(o, &b.counter)
	if err := b.adopt(ctx, priv.Conn(), node); err != nil || b.conn == nil {
		_ = priv.Close()
		return err
	}
	b.priv = priv
	return nil
}

// adopt asks conn for its CLIENT ID and keeps it; node is where to send
// CLIENT UNBLOCK.
func (b *blockingReader) adopt(ctx context.Context, conn *redis.Conn, node unblocker) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		_ = conn.Close()
		if isServerError(err) { // e.g. miniredis: no CLIENT ID
			b.plain = true
			return nil
		}
		return err
	}
	b.conn = conn
	b.mu.Lock()
	b.owner, b.id = node, id
	b.mu.Unlock()
	return nil
}

// unblock ends a blocked read on the dedicated connection, if there is one.
// It returns a server error when Redis refuses CLIENT UNBLOCK (e.g. an ACL
// without it): then the read ends by itself within Block.
func unblock(ctx context.Context, owner unblocker, id int64) error {
	if owner == nil {
		return nil
	}
	err := owner.ClientUnblock(ctx, id).Err()
	if isServerError(err) {
		return err
	}
	return nil
}

func (b *blockingReader) close() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	if b.priv != nil {
		_ = b.priv.Close()
	}
	b.conn, b.priv = nil, nil
	b.mu.Lock()
	b.owner, b.id = nil, 0
	b.mu.Unlock()
}
