package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHandlerSpanIsAChildOfThePublishSpan: the consumer span continues the
// trace the publisher started, as a child of the publish span, and the
// handler's ctx carries it.
func TestHandlerSpanIsAChildOfThePublishSpan(t *testing.T) {
	res, err := roundTrip(testContext(t), os.Getenv("REDIS_ADDR"), io.Discard)
	if err != nil {
		t.Fatalf("roundTrip: %v", err)
	}
	pub, proc := res.publish.SpanContext(), res.process.SpanContext()
	if !pub.IsValid() || !proc.IsValid() {
		t.Fatalf("span contexts valid: publish %v, process %v; want both", pub.IsValid(), proc.IsValid())
	}
	if got, want := proc.TraceID(), pub.TraceID(); got != want {
		t.Errorf("process span trace id = %s; want the publish span's %s", got, want)
	}
	if got, want := res.process.Parent().SpanID(), pub.SpanID(); got != want {
		t.Errorf("process span parent = %s; want the publish span %s", got, want)
	}
	if !res.process.Parent().IsRemote() {
		t.Error("process span parent is not remote; want remote (it came through Redis)")
	}
	if res.publish.Parent().IsValid() {
		t.Errorf("publish span has parent %s; want a root span", res.publish.Parent().SpanID())
	}
	if got, want := res.publish.SpanKind(), trace.SpanKindProducer; got != want {
		t.Errorf("publish span kind = %s; want %s", got, want)
	}
	if got, want := res.process.SpanKind(), trace.SpanKindConsumer; got != want {
		t.Errorf("process span kind = %s; want %s", got, want)
	}
	if got, want := res.handlerSpan.SpanID(), proc.SpanID(); got != want {
		t.Errorf("span in the handler's ctx = %s; want the process span %s", got, want)
	}
}

// TestTraceStateTravels: vendor state of the trace (tracestate) reaches the
// consumer along with traceparent, and the publish span stays a child of
// the span the publisher was called in (an incoming request, say).
func TestTraceStateTravels(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=opaque-value")
	if err != nil {
		t.Fatal(err)
	}
	upstream := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(testContext(t), upstream)
	res, err := roundTrip(ctx, os.Getenv("REDIS_ADDR"), io.Discard)
	if err != nil {
		t.Fatalf("roundTrip: %v", err)
	}
	if got, want := res.publish.Parent().SpanID(), upstream.SpanID(); got != want {
		t.Errorf("publish span parent = %s; want the upstream span %s", got, want)
	}
	if got, want := res.process.SpanContext().TraceID(), upstream.TraceID(); got != want {
		t.Errorf("process span trace id = %s; want the upstream trace %s", got, want)
	}
	if got, want := res.process.Parent().SpanID(), res.publish.SpanContext().SpanID(); got != want {
		t.Errorf("process span parent = %s; want the publish span %s", got, want)
	}
	if got, want := res.process.SpanContext().TraceState().String(), ts.String(); got != want {
		t.Errorf("process span tracestate = %q; want %q", got, want)
	}
}

// TestRunOutput: the program's summary is deterministic (no ids, no times)
// and reports the relation.
func TestRunOutput(t *testing.T) {
	var out bytes.Buffer
	if err := run(testContext(t), "", &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	want := `redis: embedded miniredis (set REDIS_ADDR to use a real server)
published: op-render with the trace context in the entry's fields
handled: op-render for task-1; the handler's ctx carries a span: true
spans: "publish completion" (producer), "process completion" (consumer)
handler span in the publisher's trace: true
handler span's parent is the publish span: true (remote parent: true)
`
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(out.String(), "otel-example:") {
		t.Error("the output names the stream, whose key changes every run")
	}
}
