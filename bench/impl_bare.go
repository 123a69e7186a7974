package main

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// defaultBareCount is the ceiling's XREADGROUP COUNT (-barecount).
const defaultBareCount = 500

// runBare is the ceiling: one goroutine, XREADGROUP COUNT 500 (-barecount), decode each
// entry with the library's decoder (decodeEntry), look its task up in the
// same registry the library's consumer gets, run the same handler work, one
// multi-id XACK per batch. No retries, no recovery, no dead letters.
func runBare(ctx context.Context, e *env) error {
	args := &redis.XReadGroupArgs{
		Group: e.group, Consumer: e.consumer,
		Streams: []string{e.stream, ">"},
		Count:   int64(e.bareCount), Block: pyBlockTimeout,
	}
	ids := make([]string, 0, e.bareCount)
	for ctx.Err() == nil {
		streams, err := e.rdb.XReadGroup(ctx, args).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ids = ids[:0]
		for _, st := range streams {
			for _, m := range st.Messages {
				data, _ := m.Values["data"].(string)
				msg, err := decodeEntry(data)
				if err != nil {
					return err
				}
				if err := e.lookup(ctx, msg.OperationID, msg.TaskID); err != nil {
					return err
				}
				if err := e.work(msg.Result); err != nil {
					return err
				}
				ids = append(ids, m.ID)
			}
		}
		if len(ids) > 0 {
			if err := e.rdb.XAck(ctx, e.stream, e.group, ids...).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}
