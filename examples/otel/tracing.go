package main

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamrelay/completion"
)

// This file is the part to copy into a service: publishTraced on the
// producer side, tracing on the consumer side. The trace context travels in
// fields of the stream entry next to "data" (completion.WithField), not in
// the JSON message, whose format the Python service owns.

// Span names. They name the logical stream rather than its key, so that
// they stay few (a span name is a grouping key in most tracing backends).
const (
	publishSpanName = "publish completion"
	processSpanName = "process completion"
)

// instrumentationName names the tracer, as OpenTelemetry asks: the package
// that creates the spans.
const instrumentationName = "github.com/streamrelay/completion/examples/otel"

// publishTraced publishes msg like completion.Publish, inside a producer
// span, and writes the span's context into the entry with prop (for
// propagation.TraceContext: a "traceparent" field, and a "tracestate" field
// when the trace carries vendor state). The consumer side reads it back
// with tracing.
func publishTraced(ctx context.Context, tp trace.TracerProvider, prop propagation.TextMapPropagator,
	rdb completion.XAdder, stream string, msg completion.Message, opts ...completion.PublishOption,
) (string, error) {
	ctx, span := tp.Tracer(instrumentationName).Start(ctx, publishSpanName,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.operation.name", "publish"),
			attribute.String("messaging.destination.name", stream),
			attribute.String("completion.operation_id", msg.OperationID),
			attribute.String("completion.task_id", msg.TaskID),
		))
	defer span.End()

	carrier := propagation.MapCarrier{}
	prop.Inject(ctx, carrier) // the context of span, the one just started
	keys := carrier.Keys()
	slices.Sort(keys) // a stable field order on the wire
	for _, k := range keys {
		opts = append(opts, completion.WithField(k, carrier[k]))
	}
	id, err := completion.Publish(ctx, rdb, stream, msg, opts...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return "", err
	}
	span.SetAttributes(attribute.String("messaging.message.id", id))
	return id, nil
}

// tracing returns a completion.Middleware that runs each delivery in a
// consumer span, a child of the producer span whose context prop finds in
// the entry's fields (with no trace context in the entry, the span starts a
// new trace). The handler's ctx carries the span, so that what the handler
// traces nests under it. A redelivery is one more child of the same
// producer span, with its delivery count as an attribute.
func tracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) completion.Middleware {
	tracer := tp.Tracer(instrumentationName)
	return func(next completion.CompletionHandler) completion.CompletionHandler {
		return completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) (err error) {
			ctx = prop.Extract(ctx, entryCarrier{c: c, prop: prop})
			ctx, span := tracer.Start(ctx, processSpanName,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.operation.name", "process"),
					attribute.String("messaging.message.id", c.EntryID),
					attribute.Int64("messaging.message.delivery_count", c.Deliveries),
					attribute.String("completion.operation_id", c.Message.OperationID),
					attribute.String("completion.task_id", c.Task.TaskID),
					attribute.Bool("completion.success", c.Message.Success),
				))
			returned := false
			defer func() {
				switch {
				case !returned:
					// A panic: it goes on to the consumer, which recovers
					// it (with the original stack, since it is not
					// recovered here) and counts it as a failure.
					span.SetStatus(codes.Error, "handler panicked")
				case err != nil:
					span.RecordError(err)
					span.SetStatus(codes.Error, "handler failed")
				}
				span.End()
			}()
			err = next.HandleCompletion(ctx, c)
			returned = true
			return err
		})
	}
}

// entryCarrier reads a propagator's fields from a stream entry, through
// Completion.Field, which does not allocate. It is read-only: extraction
// never sets anything.
type entryCarrier struct {
	c    *completion.Completion
	prop propagation.TextMapPropagator
}

// Get returns the entry's field key, "" when it has none.
func (e entryCarrier) Get(key string) string { return e.c.Field(key) }

// Set does nothing: the entry was written by the producer.
func (entryCarrier) Set(string, string) {}

// Keys returns the propagator's fields the entry holds. The entry's other
// fields are not trace context.
func (e entryCarrier) Keys() []string {
	var keys []string
	for _, k := range e.prop.Fields() {
		if e.c.Field(k) != "" {
			keys = append(keys, k)
		}
	}
	return keys
}
