package completion

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/completion/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTracestate  = "vendor=opaque"
)

func TestPublishWithFieldArguments(t *testing.T) {
	msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
	const data = `{"operation_id":"op-1","task_id":"t-1","success":true,"result":null,"error":null}`
	tests := []struct {
		name string
		opts []PublishOption
		want []any
	}{
		{"none", nil, []any{DataField, data}},
		{
			"in the order given, after data",
			[]PublishOption{WithField("traceparent", testTraceparent), WithField("tracestate", testTracestate)},
			[]any{DataField, data, "traceparent", testTraceparent, "tracestate", testTracestate},
		},
		{
			"a repeated name replaces the value in place",
			[]PublishOption{WithField("a", "1"), WithField("b", "2"), WithField("a", "3")},
			[]any{DataField, data, "a", "3", "b", "2"},
		},
		{"an empty value", []PublishOption{WithField("tenant", "")}, []any{DataField, data, "tenant", ""}},
		{"mixed with other options", []PublishOption{WithMaxLen(5), WithField("x", "y")}, []any{DataField, data, "x", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &xaddRecorder{}
			_, err := Publish(context.Background(), rec, "s", msg, tt.opts...)
			require.NoError(t, err)
			require.Len(t, rec.args, 1)
			assert.Equal(t, tt.want, rec.args[0].Values)
		})
	}
}

func TestPublishRefusesReservedFieldNames(t *testing.T) {
	tests := []struct {
		name       string
		field      string
		value      string
		wantInText string
	}{
		{"empty name", "", "v", "must not be empty"},
		{"data", DataField, "v", "reserved for the JSON message"},
		{"a dead-letter field", DeadLetterReasonField, "v", `"dl_" are reserved`},
		{"any dl_ name", "dl_custom", "v", `"dl_" are reserved`},
		{"invalid UTF-8 name", "trace\xff", "v", "name is not valid UTF-8"},
		{"invalid UTF-8 value", "traceparent", "00-\xfe", "value is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &xaddRecorder{}
			msg := Message{OperationID: "op", TaskID: "t", Success: true}
			_, err := Publish(context.Background(), rec, "s", msg, WithField("ok", "fine"), WithField(tt.field, tt.value))
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), fmt.Sprintf("WithField(%q)", tt.field), "the error names the field")
			assert.Contains(t, err.Error(), tt.wantInText)
			assert.Empty(t, rec.args, "nothing may be written when a field is refused")
		})
	}
	t.Run("names that only look reserved are accepted", func(t *testing.T) {
		for _, name := range []string{"Data", "DL_x", "dl", "orig_x", "orig_dl_reason", "x_dl_y", "traceparent"} {
			_, err := Publish(context.Background(), &xaddRecorder{}, "s", Message{OperationID: "op", TaskID: "t"}, WithField(name, "v"))
			assert.NoError(t, err, "WithField(%q)", name)
		}
	})
}

func TestCompletionFieldOfAHandBuiltCompletion(t *testing.T) {
	var c Completion
	assert.Equal(t, "", c.Field("traceparent"))
	assert.Equal(t, "", c.Field(DataField))
}

func TestCompletionFieldDoesNotAllocate(t *testing.T) {
	c := Completion{values: map[string]any{DataField: `{}`, "traceparent": testTraceparent}}
	var got string
	allocs := testing.AllocsPerRun(1000, func() {
		got = c.Field("traceparent")
		_ = c.Field("absent")
	})
	assert.Equal(t, testTraceparent, got)
	assert.Zero(t, allocs, "Field must not allocate")
}

// TestFieldRoundTrip: fields written with WithField reach the handler, which
// reads them with Completion.Field; an entry without them reads "".
func TestFieldRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		h := newRecorder()
		seen := make(chan [3]string, 2) // read inside the handler, as a middleware would
		h.fn = func(c *Completion) error {
			seen <- [3]string{c.Field("traceparent"), c.Field("tracestate"), c.Field("absent")}
			return nil
		}
		startConsumer(t, newTestConsumer(t, b.rdb, registryWith(2), h, testConfig(stream)))

		_, err := Publish(ctx, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true},
			WithField("traceparent", testTraceparent), WithField("tracestate", testTracestate))
		require.NoError(t, err)
		got := h.next(t)
		assert.Equal(t, "op-1", got.Message.OperationID)
		assert.Equal(t, [3]string{testTraceparent, testTracestate, ""}, <-seen)
		assert.Equal(t, testTraceparent, got.Field("traceparent"), "a copy of the Completion reads the same fields")

		publish(t, b.rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
		got = h.next(t)
		assert.Equal(t, "op-2", got.Message.OperationID)
		assert.Equal(t, [3]string{"", "", ""}, <-seen, "an entry without extra fields")
	})
}

// TestExtraFieldsCountTowardMaxPayloadBytes: an entry whose "data" is
// small but whose extra fields are large is dead-lettered as oversize,
// without the handler seeing it; the same fields under the limit pass.
func TestExtraFieldsCountTowardMaxPayloadBytes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.MaxPayloadBytes = 1024
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(2), h, cfg)
		startConsumer(t, c)

		big := strings.Repeat("x", 1100)
		_, err := Publish(ctx, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true}, WithField("blob", big))
		require.NoError(t, err)
		_, err = Publish(ctx, b.rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true}, WithField("blob", big[:500]))
		require.NoError(t, err)

		got := h.next(t)
		assert.Equal(t, "op-2", got.Message.OperationID, "the entry under the limit is handled")
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == 1 }, "the oversize entry should be dead-lettered")
		dl := deadLetters(t, b.rdb, stream)[0]
		assert.Equal(t, ReasonOversize, dl.Values[DeadLetterReasonField])
		assert.NotContains(t, dl.Values, "blob", "an oversize entry is not copied")
		assert.Equal(t, "2", dl.Values[wire.DeadLetterFieldsField])
		assert.NotEmpty(t, dl.Values[wire.DeadLetterExcerptField], "an excerpt of its data")
		assert.Len(t, h.all(), 1, "the handler never saw the oversize entry")
	})
}

// waitFor waits for an event on ch.
func waitFor(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}
