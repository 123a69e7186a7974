package main

import (
	"context"

	"github.com/streamrelay/completion"
)

// runCompletion runs the library's consumer with an in-memory registry that
// knows every task and a handler that does the handler work every
// implementation does (decode the result). Everything else is the library's
// default.
func runCompletion(ctx context.Context, e *env) error {
	handler := completion.HandlerFunc(func(_ context.Context, c *completion.Completion) error {
		return completion.Permanent(e.work(c.Message.Result))
	})
	c, err := completion.NewConsumer(e.rdb, e.fx.mem, handler, completion.Config{
		Stream:      e.stream,
		Group:       e.group,
		Consumer:    e.consumer,
		Concurrency: e.concurrency,
		BatchSize:   e.batch,
		Logger:      e.log,

		MaxReadAheadBytes: e.readAhead,
	})
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
