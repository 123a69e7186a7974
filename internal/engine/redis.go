package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion/internal/safetext"
)

// Client is the set of go-redis commands an engine uses (the root
// package's RedisClient is the same set).
type Client interface {
	redis.Scripter
	XGroupCreateMkStream(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XInfoGroups(ctx context.Context, stream string) *redis.XInfoGroupsCmd
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

// ErrRedisFatal and ErrStartTimeout are the root package's sentinels of the
// same name; it hands them over in Params so that errors wrap them.

// errClass sorts a Redis error.
type errClass int

const (
	transient errClass = iota // retry with backoff
	fatal                     // retrying cannot fix it: stop
	noGroup                   // the stream or group is gone: recreate it
)

// classify sorts err.
func classify(err error) errClass {
	switch {
	case isFatal(err):
		return fatal
	case isNoGroup(err):
		return noGroup
	}
	return transient
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

// IsFatal reports whether err is a refusal that retrying cannot fix (see
// isFatal).
func IsFatal(err error) bool { return isFatal(err) }

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

// errorLogEvery is the most often one kind of Redis error is logged.
const errorLogEvery = 10 * time.Second

// reporter is the one path of Redis errors: it counts them, tells the
// Observer, logs them at a bounded rate, marks the engine degraded, and
// stops the engine on a fatal one. Every component holds the engine's.
type reporter struct {
	e       *Engine
	mu      sync.Mutex
	lastLog map[string]time.Time
}

// fail reports err of the Redis call op. It returns true when the error is
// fatal (the engine is stopping).
func (r *reporter) fail(op string, err error, attrs ...any) bool {
	e := r.e
	if e.stopped() && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return false // the engine is stopping
	}
	e.p.Stats.NoteRedisError(err, e.p.Clock.Now())
	e.observe(Event{Kind: EventRedisError, Err: err})
	if classify(err) == fatal {
		e.log.Error("redis refused a command for good; stopping", slog.String("op", op), slog.Any("err", err))
		e.fail(fmt.Errorf("%w: %s on stream %q, group %q: %w", e.p.ErrRedisFatal, op, e.p.Stream, e.p.Group, err))
		return true
	}
	e.setState(StateDegraded)
	if r.allow(op) {
		e.log.Warn("redis call failed; will retry", append([]any{slog.String("op", op), slog.Any("err", err)}, attrs...)...)
	}
	return false
}

// ok notes a successful call: a degraded engine is running again.
func (r *reporter) ok() {
	e := r.e
	if e.state.CompareAndSwap(int32(StateDegraded), int32(StateRunning)) {
		e.log.Info("redis is answering again; resuming")
	}
}

// allow reports whether a log line for key may be written now.
func (r *reporter) allow(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastLog == nil {
		r.lastLog = make(map[string]time.Time)
	}
	now := r.e.p.Clock.Now()
	if last, ok := r.lastLog[key]; ok && now.Sub(last) < errorLogEvery {
		return false
	}
	r.lastLog[key] = now
	return true
}

// logText makes untrusted text safe for a log line.
func logText(s string) string { return safetext.Cap(s, 256) }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
