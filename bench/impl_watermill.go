package main

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/redis/go-redis/v9"
)

// runWatermill consumes with a watermill-redisstream subscriber in the
// consumer group, with its defaults: it decodes the payload (the same JSON)
// in the handler and acknowledges with msg.Ack(). The subscriber reads with
// COUNT 1 and sends one XACK per message.
func runWatermill(ctx context.Context, e *env) error {
	// Subscriber.Close closes the client it was given: give it its own.
	client := redis.NewClient(&redis.Options{Addr: e.addr})
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        client,
		Consumer:      e.consumer,
		ConsumerGroup: e.group,
		// Without this the first read blocks forever; the run could not stop.
		DisableIndefiniteInitialBlock: true,
	}, watermill.NopLogger{})
	if err != nil {
		client.Close()
		return err
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, e.stream)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watermill closed the message channel")
			}
			msg, err := decodeBytes(m.Payload)
			if err != nil {
				return err
			}
			if err := e.work(msg.Result); err != nil {
				return err
			}
			m.Ack()
		}
	}
}
