package inspect_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/redistest"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// redrivePaths are the two ways a redrive moves a dead letter: one script,
// when the dead-letter stream and the stream are on one node as far as the
// client tells, or XRANGE, XADD, XDEL.
var redrivePaths = []string{"script", "xrange-xadd-xdel"}

// TestDeadLetterKeepsFields: a dead letter holds the entry's extra fields,
// the Inspector reports them, and a redrive (either way of moving) puts them
// back, so that the handler sees them again.
func TestDeadLetterKeepsFields(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		for _, path := range redrivePaths {
			t.Run(path, func(t *testing.T) {
				ctx := context.Background()
				stream := uniqueStream(t, b.Client)
				cfg := testConfig(stream)
				cfg.DeadLetterStream = completion.DeadLetterStreamFor(stream)
				var client inspect.Client = b.Client
				if path != "script" {
					client = plainClient{b.Client}
					// Another hash tag: the Inspector cannot use a script.
					cfg.DeadLetterStream = uniqueStream(t, b.Client) + ":dead"
				}
				require.Equal(t, path == "script", keys.TopologyOf(client).SameNode(cfg.DeadLetterStream, stream), "the redrive path under test")
				deadLettered := make(chan struct{}, 1)
				cfg.Observer = completion.ObserverFunc(func(e completion.Event) {
					if e.Kind == completion.EventDeadLettered {
						select { // an Observer must not block
						case deadLettered <- struct{}{}:
						default:
						}
					}
				})
				var calls atomic.Int64
				h := newRecorder()
				h.fn = func(c *completion.Completion) error {
					if calls.Add(1) == 1 {
						return completion.Permanent(errors.New("first delivery fails for good"))
					}
					return nil
				}
				startConsumer(t, newTestConsumer(t, b.Client, registryWith(1), h, cfg))

				id, err := completion.Publish(ctx, b.Client, stream, completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true},
					completion.WithField("traceparent", testTraceparent), completion.WithField("tenant", "acme"))
				require.NoError(t, err)
				first := h.next(t)
				require.Equal(t, testTraceparent, first.Field("traceparent"))
				select {
				case <-deadLettered:
				case <-time.After(10 * time.Second):
					t.Fatal("timed out waiting for the dead letter")
				}

				// The raw dead letter carries the fields unchanged.
				raw, err := b.Client.XRange(ctx, cfg.DeadLetterStream, "-", "+").Result()
				require.NoError(t, err)
				require.Len(t, raw, 1)
				assert.Equal(t, testTraceparent, raw[0].Values["traceparent"])
				assert.Equal(t, "acme", raw[0].Values["tenant"])
				assert.Equal(t, completion.ReasonPermanent, raw[0].Values[completion.DeadLetterReasonField])

				in := newInspector(t, client, inspect.Config{Stream: stream, Group: cfg.Group, DeadLetterStream: cfg.DeadLetterStream})
				dls := allDeadLetters(t, in)
				require.Len(t, dls, 1)
				assert.Equal(t, id, dls[0].SourceID)
				assert.Equal(t, completion.ReasonPermanent, dls[0].Reason)
				assert.Equal(t, map[string]string{
					completion.DataField: raw[0].Values[completion.DataField].(string),
					"traceparent":        testTraceparent,
					"tenant":             "acme",
				}, dls[0].Fields)

				n, err := in.Redrive(ctx, dls[0].ID)
				require.NoError(t, err)
				require.Equal(t, 1, n)
				again := h.next(t)
				assert.NotEqual(t, id, again.EntryID, "a redriven entry is a new entry")
				assert.Equal(t, "op-1", again.Message.OperationID)
				assert.Equal(t, testTraceparent, again.Field("traceparent"))
				assert.Equal(t, "acme", again.Field("tenant"))
			})
		}
	})
}

// TestHostileFieldNamesRoundTrip: whatever the producer named its fields,
// even like dead-letter metadata, the dead letter and a redrive (either way
// of moving) give back exactly those fields, in their order.
func TestHostileFieldNamesRoundTrip(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		for _, path := range redrivePaths {
			t.Run(path, func(t *testing.T) {
				rdb := b.Client
				ctx := context.Background()
				stream := uniqueStream(t, rdb)
				cfg := testConfig(stream)
				var client inspect.Client = rdb
				if path != "script" {
					client = plainClient{rdb}
					cfg.DeadLetterStream = otherTagDeadStream(t, rdb, stream)
				}
				c := newTestConsumer(t, rdb, registryWith(0), newRecorder(), cfg)
				stop := startConsumer(t, c)

				written := []string{completion.DataField, `{"operation_id":"op-1","task_id":"t-x","success":true,"result":null,"error":null}`,
					"dl_reason", "A", "orig_dl_reason", "B", "orig_dl_x", "C", "orig_", "D", "zz", "E", "dl_", "F"}
				values := make([]any, len(written))
				for i, v := range written {
					values[i] = v
				}
				require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Err())
				eventually(t, func() bool { return c.Stats().DeadLettered == 1 }, "not dead-lettered")
				require.NoError(t, stop())

				in := newInspector(t, client, inspect.Config{Stream: stream, Group: "g", DeadLetterStream: cfg.DeadLetterStream})
				page, err := in.DeadLetters(ctx, inspect.DeadLetterQuery{Count: 10})
				require.NoError(t, err)
				dls := page.DeadLetters
				require.Len(t, dls, 1)
				assert.Equal(t, completion.ReasonTaskNotFound, dls[0].Reason, "the dead letter's own reason, not the producer's dl_reason")
				assert.Equal(t, map[string]string{completion.DataField: written[1], "dl_reason": "A", "orig_dl_reason": "B", "orig_dl_x": "C", "orig_": "D", "zz": "E", "dl_": "F"}, dls[0].Fields)

				before := lastID(t, rdb, stream)
				n, err := in.RedriveAll(ctx)
				require.NoError(t, err)
				require.Equal(t, 1, n)
				after := lastID(t, rdb, stream)
				require.NotEqual(t, before, after)
				assert.Equal(t, written, rawEntryFields(t, rdb, stream, after))
			})
		}
	})
}
