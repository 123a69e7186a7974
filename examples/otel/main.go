// Command otel carries an OpenTelemetry trace from the service that
// publishes a completion to the handler that receives it, in another pod
// perhaps: the publisher injects the W3C trace context (traceparent, and
// tracestate when there is one) into fields of the stream entry with
// completion.WithField, and a completion.Middleware extracts it with
// Completion.Field and starts the handler's span as a child of the publish
// span. It lives in a module of its own, so that OpenTelemetry never enters
// the library's go.mod.
//
//	cd examples/otel && go run .        # embedded miniredis unless REDIS_ADDR is set
//
// It records the spans in memory (tracetest.SpanRecorder; a service would
// use an OTLP exporter instead), prints how they relate, and exits non-zero
// if the handler's span is not a child of the publish span. The tracing
// code to copy is in tracing.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamrelay/completion"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Getenv("REDIS_ADDR"), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

// run does one traced round trip and prints what it shows; it fails when
// the spans are not related as they should be.
func run(ctx context.Context, addr string, out io.Writer) error {
	if addr == "" {
		fmt.Fprintln(out, "redis: embedded miniredis (set REDIS_ADDR to use a real server)")
	} else {
		fmt.Fprintln(out, "redis:", addr)
	}
	res, err := roundTrip(ctx, addr, out)
	if err != nil {
		return err
	}
	pub, proc := res.publish.SpanContext(), res.process.SpanContext()
	sameTrace := proc.TraceID() == pub.TraceID()
	childOfPublish := res.process.Parent().SpanID() == pub.SpanID()
	fmt.Fprintf(out, "spans: %q (%s), %q (%s)\n", res.publish.Name(), res.publish.SpanKind(), res.process.Name(), res.process.SpanKind())
	fmt.Fprintf(out, "handler span in the publisher's trace: %v\n", sameTrace)
	fmt.Fprintf(out, "handler span's parent is the publish span: %v (remote parent: %v)\n", childOfPublish, res.process.Parent().IsRemote())
	if !sameTrace || !childOfPublish {
		return errors.New("the handler's span is not a child of the publish span")
	}
	return nil
}

// roundTripResult holds the two spans of one round trip, ended.
type roundTripResult struct {
	publish, process sdktrace.ReadOnlySpan
	// handlerSpan is the span context the handler found in its ctx.
	handlerSpan trace.SpanContext
}

// roundTrip publishes one completion inside a producer span, started under
// whatever span ctx carries, consumes it through the tracing middleware, and
// returns the recorded spans. It uses the Redis at addr, or an embedded
// miniredis when addr is "".
func roundTrip(ctx context.Context, addr string, out io.Writer) (roundTripResult, error) {
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return roundTripResult{}, err
		}
		defer mr.Close()
		addr = mr.Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	// A stream of our own, so that a shared Redis is left as it was.
	stream := fmt.Sprintf("otel-example:%d:completions", time.Now().UnixNano())
	defer rdb.Del(context.WithoutCancel(ctx), stream, completion.DeadLetterStreamFor(stream))

	// One TracerProvider for both sides here; in production each service
	// has its own, exporting to the same collector (OTLP).
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	defer tp.Shutdown(context.WithoutCancel(ctx))
	// W3C Trace Context, as most services speak it. Both sides must use
	// the same propagator (otel.SetTextMapPropagator sets a global one).
	prop := propagation.TraceContext{}

	reg := &completion.MemoryRegistry{}
	reg.Register(completion.Task{TaskID: "task-1", SessionID: "session-a", ToolCallID: "call-1", OperationID: "op-render"})

	handled := make(chan trace.SpanContext, 1)
	handler := completion.HandlerFunc(func(ctx context.Context, c *completion.Completion) error {
		// ctx carries the consumer span: whatever the handler does with it
		// (database calls, HTTP requests) is traced under it.
		sc := trace.SpanContextFromContext(ctx)
		fmt.Fprintf(out, "handled: %s for %s; the handler's ctx carries a span: %v\n", c.Message.OperationID, c.Task.TaskID, sc.IsValid())
		handled <- sc
		return nil
	})
	consumer, err := completion.NewConsumer(rdb, reg, completion.Chain(handler, tracing(tp, prop)), completion.Config{
		Stream: stream,
		Block:  200 * time.Millisecond, // short, so that the example stops quickly on miniredis
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return roundTripResult{}, err
	}

	result, err := completion.ObjectResult(map[string]any{"pages": 3})
	if err != nil {
		return roundTripResult{}, err
	}
	msg := completion.Message{OperationID: "op-render", TaskID: "task-1", Success: true, Result: result}
	if _, err := publishTraced(ctx, tp, prop, rdb, stream, msg); err != nil {
		return roundTripResult{}, err
	}
	fmt.Fprintf(out, "published: %s with the trace context in the entry's fields\n", msg.OperationID)

	// The consumer's context shares nothing with the publisher's but the
	// deadline: in production they are different services, and only the
	// entry's fields carry the trace from one to the other.
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	defer context.AfterFunc(ctx, stop)()
	runErr := make(chan error, 1)
	go func() { runErr <- consumer.Run(runCtx) }()
	var res roundTripResult
	select {
	case res.handlerSpan = <-handled:
	case <-ctx.Done():
		return roundTripResult{}, fmt.Errorf("timed out waiting for the completion: %w", ctx.Err())
	}
	// Run returns only after every handler call, the middleware's included,
	// has returned: the consumer span has ended then.
	stop()
	if err := <-runErr; err != nil {
		return roundTripResult{}, err
	}

	for _, s := range recorder.Ended() {
		switch s.Name() {
		case publishSpanName:
			res.publish = s
		case processSpanName:
			res.process = s
		}
	}
	if res.publish == nil || res.process == nil {
		return roundTripResult{}, fmt.Errorf("recorded %d spans, want a %q and a %q span", len(recorder.Ended()), publishSpanName, processSpanName)
	}
	return res, nil
}
