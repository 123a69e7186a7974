package completion

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClient is the set of go-redis commands a [Consumer] uses.
// *redis.Client, *redis.ClusterClient, *redis.Ring and redis.UniversalClient
// satisfy it; a test double can embed one of them and override what it
// needs. The consumer never closes it.
//
// Two things depend on the client's concrete type: only a *redis.Client or
// *redis.ClusterClient gets the dedicated, interruptible blocking read
// (other clients, wrappers included, make shutdown wait up to Config.Block),
// and only a *redis.Client, or keys in one cluster slot, get the atomic
// one-script move to the dead-letter stream (otherwise: dead letter first,
// acknowledgement second).
type RedisClient interface {
	redis.Scripter
	XGroupCreateMkStream(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XReadGroup(ctx context.Context, a *redis.XReadGroupArgs) *redis.XStreamSliceCmd
	XAutoClaimWithDeleted(ctx context.Context, a *redis.XAutoClaimArgs) *redis.XAutoClaimWithDeletedCmd
	XPendingExt(ctx context.Context, a *redis.XPendingExtArgs) *redis.XPendingExtCmd
	XClaim(ctx context.Context, a *redis.XClaimArgs) *redis.XMessageSliceCmd
	XAck(ctx context.Context, stream, group string, ids ...string) *redis.IntCmd
	XRange(ctx context.Context, stream, start, stop string) *redis.XMessageSliceCmd
	XAdd(ctx context.Context, a *redis.XAddArgs) *redis.StringCmd
	Exists(ctx context.Context, keys ...string) *redis.IntCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	ZRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// blockingReader runs the consumer's blocking XREADGROUP on a connection of
// its own whose CLIENT ID it knows, so that shutdown can end the wait at once
// with CLIENT UNBLOCK from another connection instead of waiting out the
// BLOCK (go-redis does not interrupt a blocked read when its context is
// cancelled). It works for *redis.Client and, through the stream's master,
// *redis.ClusterClient. For other clients, or servers without CLIENT ID
// (miniredis), it reads through the client itself and shutdown waits for the
// read to time out: at most Config.Block.
//
// read, open and close are called by the reading goroutine only; target may
// be called from any goroutine.
type blockingReader struct {
	client RedisClient
	stream string
	conn   *redis.Conn // nil: read through client
	plain  bool        // CLIENT ID is not supported: always read through client

	mu    sync.Mutex    // guards owner and id, which target reads
	owner *redis.Client // the node conn belongs to, to send CLIENT UNBLOCK
	id    int64
}

// target returns where to send CLIENT UNBLOCK: the node and the client id
// of the dedicated connection, or a nil node when there is none.
func (b *blockingReader) target() (*redis.Client, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owner, b.id
}

// read issues XREADGROUP. It (re)opens the dedicated connection as needed.
func (b *blockingReader) read(ctx context.Context, a *redis.XReadGroupArgs) ([]redis.XStream, error) {
	if b.conn == nil {
		return b.client.XReadGroup(ctx, a).Result()
	}
	res, err := b.conn.XReadGroup(ctx, a).Result()
	if err != nil && !errors.Is(err, redis.Nil) && !isNoGroup(err) {
		// The connection may be broken or, in a cluster, the slot may have
		// moved (MOVED, ASK, CLUSTERDOWN: a dedicated connection does not
		// follow redirections): start afresh, on the key's current master.
		b.close()
	}
	return res, err
}

// open opens the dedicated connection. On failure the next read goes
// through the client; a server that refuses CLIENT ID (miniredis, an ACL
// without it) is not asked again, other errors are returned for the
// caller to report.
func (b *blockingReader) open(ctx context.Context) error {
	var node *redis.Client
	switch c := b.client.(type) {
	case *redis.Client:
		node = c
	case *redis.ClusterClient:
		n, err := c.MasterForKey(ctx, b.stream)
		if err != nil {
			return err // read through the cluster client this time
		}
		node = n
	default:
		b.plain = true
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn := node.Conn()
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
// without it): then the read ends by itself within Config.Block.
func unblock(ctx context.Context, owner *redis.Client, id int64) error {
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
	b.conn = nil
	b.mu.Lock()
	b.owner, b.id = nil, 0
	b.mu.Unlock()
}

// isServerError reports whether err is an error reply from Redis (as opposed
// to a network, timeout or client error).
func isServerError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	// go-redis also marks some client-side errors with RedisError; server
	// replies have an upper-case code word first.
	msg := re.Error()
	return msg != "" && msg[0] >= 'A' && msg[0] <= 'Z'
}

// isFatal reports whether err is a refusal that retrying cannot fix: missing
// ACL permission, failed authentication, a key of another type, or an
// unknown command.
func isFatal(err error) bool {
	if !isServerError(err) {
		return false
	}
	msg := err.Error()
	for _, p := range []string{
		"NOPERM", "NOAUTH", "WRONGPASS", "WRONGTYPE", "ERR unknown command",
		// A command or key a script runs into is refused with ERR, not
		// NOPERM: Redis 7.0 and 7.2+ word it so.
		"ERR The user executing the script can't",
		"ERR ACL failure in script",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// isNoGroup reports whether err says the group or the stream is gone (the
// key was deleted, expired or flushed) or a blocked read was ended because
// of that.
func isNoGroup(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP") || redis.HasErrorPrefix(err, "UNBLOCKED")
}
