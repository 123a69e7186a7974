package completion

import (
	"errors"

	"github.com/streamrelay/completion/internal/wire"
)

// Sentinel errors. Test for them with [errors.Is]; the errors the package
// returns wrap them with details of what went wrong.
var (
	// ErrInvalidConfig is returned by [NewConsumer] when a [Config] field
	// holds a value the consumer cannot work with. The error names the field.
	ErrInvalidConfig = errors.New("completion: invalid config")

	// ErrNilArgument is returned when a required argument is nil (or a
	// typed nil, such as a nil *redis.Client in an interface): a Redis
	// client, a registry or a handler. The error names the argument.
	ErrNilArgument = errors.New("completion: nil argument")

	// ErrMalformed is the error every decoding and validation failure of a
	// [Message] wraps. The wrapping error names the field and the problem,
	// for example:
	//
	//	completion: malformed message: field "success": want a boolean, got an array
	ErrMalformed = wire.ErrMalformed

	// ErrTaskNotFound is returned by a [TaskRegistry] when neither the
	// operation id nor the task id is known. It is not a failure of the
	// registry: the consumer applies [Config.NotFound] to such entries.
	ErrTaskNotFound = errors.New("completion: task not found")

	// ErrInvalidTask is reported when the registry returns a [Task] whose
	// TaskID, SessionID or ToolCallID is empty. Such entries are dead-lettered.
	ErrInvalidTask = errors.New("completion: invalid task")

	// ErrRunning is returned by [Consumer.Run] when the consumer is already
	// running. A Consumer runs once at a time; start another Consumer (with
	// another Config.Consumer name) to read in parallel.
	ErrRunning = errors.New("completion: consumer is already running")

	// ErrStartTimeout is returned by [Consumer.Run] when it could not reach
	// Redis and create or find its group within Config.StartTimeout. The
	// error also wraps the last Redis error, which says what failed: a
	// refused dial (the address), NOAUTH or WRONGPASS (the credentials), a
	// certificate error (TLS).
	ErrStartTimeout = errors.New("completion: could not start")

	// ErrShutdownTimeout is returned by [Consumer.Run] when handlers still
	// ran after Config.ShutdownTimeout and did not return after their context
	// was cancelled either. Their entries stay pending and will be reclaimed;
	// the handler goroutines are left running, as http.Server.Shutdown does.
	ErrShutdownTimeout = errors.New("completion: shutdown timed out with handlers still running")

	// ErrPanic is wrapped by the error a recovered panic of a handler or a
	// TaskRegistry turns into; the delivery counts as failed.
	ErrPanic = errors.New("completion: panic")

	// ErrRedisFatal is returned by [Consumer.Run] when Redis refuses a
	// command in a way retrying cannot fix: a missing ACL permission
	// (NOPERM), failed authentication, a key holding another type
	// (WRONGTYPE), or an unknown command. The wrapped error carries the
	// server's words, which name what is missing.
	ErrRedisFatal = errors.New("completion: redis refused the command")
)

// permanentError marks a handler error that retrying cannot fix. The
// consumer dead-letters the entry at once instead of redelivering it. Create
// one with [Permanent]; detect one with [IsPermanent].
type permanentError struct {
	Err error
}

// Error returns the wrapped error's text.
func (e *permanentError) Error() string {
	if e.Err == nil {
		return "completion: permanent error"
	}
	return e.Err.Error()
}

// Unwrap returns the wrapped error.
func (e *permanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that the consumer dead-letters the entry without
// further retries. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, was made by
// [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
