package taskstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/scripts"
	"github.com/streamrelay/completion/redisregistry"
)

// HandlerConfig configures a [Handler]. The zero value is ready to use.
type HandlerConfig struct {
	// SeparateWrites makes the handler write in the order it uses across
	// cluster nodes (events, then status; the consumer acknowledges) even
	// where one script could do it all: set it when the registry's keys
	// are on another Redis than the streams' client. Default: false.
	SeparateWrites bool

	// Logger receives a line for completions whose task was not running
	// or no longer exists. Default: slog.Default().
	Logger *slog.Logger
}

// Handler is the ready [completion.CompletionHandler] of a service that
// tells its users through task streams, as the Python service does: for
// each completion it appends the outcome event ([OutcomeEvent]) and the
// finish event to the task's stream, announces both on the task's channel,
// and moves the task's status from "running" to "completed" or "failed" in
// the registry (compare and set).
//
// Where the task's stream, its meta hash and the completion stream are on
// one node (a *redis.Client, a Sentinel client, or keys sharing a cluster
// slot), all of it, with the XACK of the completion's entry, is one Lua
// script: no crash leaves a task "running" with its outcome written, or the
// reverse. Elsewhere (Redis Cluster, whose Python-layout keys live in
// different slots) the handler writes in an order that may repeat but never
// loses: first the events, once per operation (a script on the stream's
// key that skips an outcome already there for the operation id), then the
// status change; the consumer acknowledges after the handler returns. A
// crash in between redelivers the completion, which finds its events and
// completes the status change; subscribers skip a repeated outcome of one
// operation all the same.
//
// A completion for a task that is no longer running writes nothing: its
// outcome is not appended twice. The handler must share the registry's
// Redis (it writes the meta hash through the streams' client); see
// HandlerConfig.SeparateWrites otherwise.
//
// A Handler is safe for concurrent use.
type Handler struct {
	streams  *Streams
	registry *redisregistry.Registry
	cfg      HandlerConfig
	log      *slog.Logger
}

// NewHandler returns a handler writing to streams and registry. It returns
// an error wrapping [completion.ErrNilArgument] for a nil argument.
func NewHandler(streams *Streams, registry *redisregistry.Registry, cfg HandlerConfig) (*Handler, error) {
	switch {
	case streams == nil:
		return nil, fmt.Errorf("%w: taskstream.NewHandler: streams", completion.ErrNilArgument)
	case registry == nil:
		return nil, fmt.Errorf("%w: taskstream.NewHandler: registry", completion.ErrNilArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Handler{streams: streams, registry: registry, cfg: cfg, log: log}, nil
}

// HandleCompletion implements [completion.CompletionHandler]: it writes
// c's outcome to its task's stream and status, as the [Handler] doc says.
// A Redis error is returned (the consumer retries the completion); a task
// id the streams cannot take is a [completion.Permanent] error.
func (h *Handler) HandleCompletion(ctx context.Context, c *completion.Completion) error {
	task, msg := c.Task, c.Message
	if err := checkTaskID(task.TaskID); err != nil {
		return completion.Permanent(err)
	}
	status := redisregistry.StatusCompleted
	if !msg.Success {
		status = redisregistry.StatusFailed
	}
	s := h.streams
	stream, meta := s.Key(task.TaskID), h.registry.MetaKey(task.TaskID)
	atomic := !h.cfg.SeparateWrites && s.topo.SameNode(stream, meta)
	if !atomic && task.Status != "" && task.Status != redisregistry.StatusRunning {
		h.notRunning(c, task.Status)
		return nil
	}
	keys := []string{stream}
	group, entry := "", ""
	if atomic {
		keys = append(keys, meta)
		if c.Stream != "" && c.Group != "" && c.EntryID != "" && s.topo.SameNode(stream, c.Stream) {
			keys = append(keys, c.Stream)
			group, entry = c.Group, c.EntryID
		}
	}
	res, err := scripts.TaskOutcome.Run(ctx, s.client, keys,
		s.cfg.MaxLen, s.cfg.TTL.Milliseconds(), s.Channel(task.TaskID), msg.OperationID,
		[]byte(OutcomeEvent(task, msg)), FinishEvent, status, group, entry).Slice()
	if err != nil {
		return fmt.Errorf("taskstream: write the outcome of operation %q to task %q: %w", msg.OperationID, task.TaskID, err)
	}
	code, _ := res[0].(int64)
	switch code {
	case scripts.TaskOutcomeNotRunning:
		st, _ := res[1].(string)
		h.notRunning(c, st)
		return nil
	case scripts.TaskOutcomeNoTask:
		h.log.Info("taskstream: completion for a task whose meta hash is gone: nothing written",
			"operation_id", msg.OperationID, "task_id", task.TaskID)
		return nil
	}
	if atomic {
		return nil
	}
	if _, err := h.registry.SetStatus(ctx, task.TaskID, redisregistry.StatusRunning, status); err != nil {
		if errors.Is(err, completion.ErrTaskNotFound) {
			h.log.Info("taskstream: outcome written, but the task's meta hash is gone: no status to set",
				"operation_id", msg.OperationID, "task_id", task.TaskID)
			return nil
		}
		return fmt.Errorf("taskstream: outcome of operation %q written; set the status of task %q: %w", msg.OperationID, task.TaskID, err)
	}
	return nil
}

func (h *Handler) notRunning(c *completion.Completion, status string) {
	h.log.Debug("taskstream: completion for a task that is not running: nothing written",
		"operation_id", c.Message.OperationID, "task_id", c.Task.TaskID, "status", status)
}

// Middleware returns a [completion.Middleware] that runs the handler it
// wraps first (to store the result, say) and, when that returns nil,
// writes the outcome as HandleCompletion does. An error of the wrapped
// handler is returned as it is, and nothing is written.
func (h *Handler) Middleware() completion.Middleware {
	return func(next completion.CompletionHandler) completion.CompletionHandler {
		return completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
			if err := next.HandleCompletion(ctx, c); err != nil {
				return err
			}
			return h.HandleCompletion(ctx, c)
		})
	}
}
