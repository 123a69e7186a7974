package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/keys"
	"github.com/streamrelay/completion/internal/wire"
)

func TestConsumerCreatesGroupAndToleratesBusyGroup(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)

		// The first consumer creates stream and group.
		c1 := newTestConsumer(t, b.rdb, registryWith(1), newRecorder(), cfg)
		stop1 := startConsumer(t, c1)
		eventually(t, func() bool {
			groups, err := b.rdb.XInfoGroups(ctx, stream).Result()
			return err == nil && len(groups) == 1 && groups[0].Name == "g"
		}, "group not created")

		// A second consumer of the same group meets BUSYGROUP and runs.
		cfg.Consumer = "c2"
		h2 := newRecorder()
		c2 := newTestConsumer(t, b.rdb, registryWith(1), h2, cfg)
		stop2 := startConsumer(t, c2)
		eventually(t, func() bool { return c2.State() == StateRunning }, "second consumer not running: %v", c2.State())
		require.NoError(t, stop1())
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		got := h2.next(t)
		assert.Equal(t, "op-1", got.Message.OperationID)
		require.NoError(t, stop2())
	})
}

func TestConsumerReadsFromStartOfExistingStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		// Published before any group exists: the group starts at 0, so it
		// is not skipped.
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		startConsumer(t, c)
		assert.Equal(t, "op-1", h.next(t).Message.OperationID)
	})
}

func TestConsumerHandlesAndAcks(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		const n = 50
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(n), h, testConfig(stream))
		stop := startConsumer(t, c)
		for i := 1; i <= n; i++ {
			m := Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: i%2 == 0}
			if m.Success {
				m.Result = json.RawMessage(fmt.Sprintf(`{"n":%d,"z":"last","a":"first"}`, i))
			} else {
				m.Error = fmt.Sprintf("boom %d", i)
			}
			publish(t, b.rdb, stream, m)
		}
		seen := map[string]Completion{}
		for len(seen) < n {
			got := h.next(t)
			seen[got.Message.OperationID] = got
		}
		for i := 1; i <= n; i++ {
			got := seen[fmt.Sprintf("op-%d", i)]
			assert.Equal(t, fmt.Sprintf("t-%d", i), got.Task.TaskID)
			assert.Equal(t, int64(1), got.Deliveries)
			if i%2 == 0 {
				assert.True(t, got.Message.Success)
				assert.Equal(t, fmt.Sprintf(`{"n":%d,"z":"last","a":"first"}`, i), string(got.Message.Result))
			} else {
				assert.False(t, got.Message.Success)
				assert.Equal(t, fmt.Sprintf("boom %d", i), got.Message.Error)
			}
		}
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "entries left unacknowledged")
		require.NoError(t, stop())
		st := c.Stats()
		assert.Equal(t, int64(n), st.Handled)
		assert.Equal(t, int64(0), st.InFlight)
		assert.Empty(t, deadLetters(t, b.rdb, stream))
	})
}

func TestHandlerErrorIsRetriedWithPayloadIntact(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		var calls atomic.Int32
		h := newRecorder()
		h.fn = func(c *Completion) error {
			if calls.Add(1) < 3 {
				return errors.New("downstream unavailable")
			}
			return nil
		}
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		startConsumer(t, c)
		result := json.RawMessage(`{"b":1,"a":[1,2,{"c":"<&>"}]}`)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: result})
		for want := int64(1); want <= 3; want++ {
			got := h.next(t)
			assert.Equal(t, want, got.Deliveries)
			assert.Equal(t, string(result), string(got.Message.Result), "payload changed on redelivery")
		}
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked after success")
		assert.Equal(t, int64(2), c.Stats().Retried)
	})
}

func TestFailedEntryIsReclaimedByAnotherConsumer(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		// Consumer A fails the entry and stops before its retry is due.
		cfgA := testConfig(stream)
		cfgA.RetryBackoff, cfgA.MaxRetryBackoff = time.Hour, time.Hour
		hA := newRecorder()
		hA.fn = func(*Completion) error { return errors.New("fail in A") }
		a := newTestConsumer(t, b.rdb, registryWith(1), hA, cfgA)
		stopA := startConsumer(t, a)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: StringResult("done")})
		first := hA.next(t)
		require.NoError(t, stopA())
		require.Equal(t, int64(1), pendingCount(t, b.rdb, stream, "g"), "a failed entry must stay pending")

		// Consumer B claims it after ClaimMinIdle.
		cfgB := testConfig(stream)
		cfgB.Consumer = "c2"
		hB := newRecorder()
		bc := newTestConsumer(t, b.rdb, registryWith(1), hB, cfgB)
		startConsumer(t, bc)
		got := hB.next(t)
		assert.Equal(t, first.EntryID, got.EntryID)
		assert.Equal(t, `"done"`, string(got.Message.Result))
		assert.Equal(t, int64(2), got.Deliveries)
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked by B")
		assert.Equal(t, int64(1), bc.Stats().Reclaimed)
	})
}

func TestCrashedConsumersEntriesArePickedUp(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
		for i := 1; i <= 5; i++ {
			publish(t, b.rdb, stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true})
		}
		// A consumer that read everything and died without acking.
		_, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{stream, ">"}, Count: 10, Block: -1}).Result()
		require.NoError(t, err)
		require.Equal(t, int64(5), pendingCount(t, b.rdb, stream, "g"))

		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(5), h, testConfig(stream))
		startConsumer(t, c)
		seen := map[string]bool{}
		for len(seen) < 5 {
			seen[h.next(t).Message.OperationID] = true
		}
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "reclaimed entries not acked")
	})
}

func TestOwnPendingEntriesAreReadFirst(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		require.NoError(t, b.rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err())
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		// This consumer's previous life read the entry and crashed.
		_, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{stream, ">"}, Count: 10, Block: -1}).Result()
		require.NoError(t, err)

		cfg := testConfig(stream)
		cfg.ClaimMinIdle = time.Hour // no XAUTOCLAIM help
		cfg.LeaseInterval = time.Minute
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		startConsumer(t, c)
		got := h.next(t)
		assert.Equal(t, "op-1", got.Message.OperationID)
		assert.Equal(t, int64(2), got.Deliveries)
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "not acked")
	})
}

func TestUnknownTaskPolicies(t *testing.T) {
	tests := []struct {
		policy       NotFoundPolicy
		wantDead     bool
		wantDropped  int64
		wantAttempts int64 // deliveries before the outcome
	}{
		{NotFoundDeadLetter, true, 0, 1},
		{NotFoundDrop, false, 1, 1},
		{NotFoundRetry, true, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b backend) {
				stream := uniqueStream(t, b.rdb)
				cfg := testConfig(stream)
				cfg.NotFound = tt.policy
				cfg.MaxDeliveries = 3
				var lookups atomic.Int64
				reg := TaskRegistryFunc(func(ctx context.Context, op, task string) (Task, error) {
					lookups.Add(1)
					return Task{}, fmt.Errorf("%w: %s", ErrTaskNotFound, op)
				})
				h := newRecorder()
				c := newTestConsumer(t, b.rdb, reg, h, cfg)
				stop := startConsumer(t, c)
				id := publish(t, b.rdb, stream, Message{OperationID: "op-x", TaskID: "t-x", Success: true})
				eventually(t, func() bool {
					st := c.Stats()
					return st.DeadLettered+st.Dropped == 1 && pendingCount(t, b.rdb, stream, "g") == 0
				}, "entry not settled")
				require.NoError(t, stop())
				assert.Empty(t, h.all(), "the handler must not see unknown tasks")
				assert.Equal(t, tt.wantAttempts, lookups.Load())
				assert.Equal(t, tt.wantDropped, c.Stats().Dropped)
				dl := deadLetters(t, b.rdb, stream)
				if !tt.wantDead {
					assert.Empty(t, dl)
					return
				}
				require.Len(t, dl, 1)
				want := ReasonTaskNotFound
				if tt.policy == NotFoundRetry {
					want = ReasonMaxDeliveries
				}
				assert.Equal(t, want, dl[0].Values[DeadLetterReasonField])
				assert.Equal(t, id, dl[0].Values[DeadLetterIDField])
				assert.Equal(t, fmt.Sprint(tt.wantAttempts), dl[0].Values[DeadLetterDeliveriesField])
				assert.Contains(t, dl[0].Values[DeadLetterErrorField], "task not found")
			})
		})
	}
}

func TestMalformedEntriesAreDeadLetteredAndDoNotBlock(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.MaxPayloadBytes = 1000
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(2), h, cfg)
		startConsumer(t, c)

		bad := []struct {
			values map[string]any
			reason string
		}{
			{map[string]any{"other": "x"}, ReasonMalformed},
			{map[string]any{"data": "not json"}, ReasonMalformed},
			{map[string]any{"data": `{"operation_id":"op-1","task_id":"t-1","success":"maybe"}`}, ReasonMalformed},
			{map[string]any{"data": `{"operation_id":"","task_id":"t-1","success":true}`}, ReasonMalformed},
			{map[string]any{"data": `{"operation_id":"op-1","task_id":"t-1","success":true,"result":42}`}, ReasonMalformed},
			{map[string]any{"data": `{"operation_id":"op-1","task_id":"t-1","success":true,"result":"` + strings.Repeat("x", 1000) + `"}`}, ReasonOversize},
		}
		byID := map[string]int{}
		for i, e := range bad {
			id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: e.values}).Result()
			require.NoError(t, err)
			byID[id] = i
		}
		publish(t, b.rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
		assert.Equal(t, "op-2", h.next(t).Message.OperationID)
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == len(bad) }, "not all poison entries dead-lettered")
		for _, dl := range deadLetters(t, b.rdb, stream) {
			i, ok := byID[dl.Values[DeadLetterIDField].(string)]
			require.True(t, ok, "dead letter for an unknown source id: %v", dl.Values)
			assert.Equal(t, bad[i].reason, dl.Values[DeadLetterReasonField], "entry %d", i)
			if bad[i].reason == ReasonOversize {
				// Too big to copy: an excerpt and the sizes instead.
				data := bad[i].values[DataField].(string)
				assert.Equal(t, data[:256], dl.Values[wire.DeadLetterExcerptField])
				assert.Equal(t, strconv.Itoa(len(data)), dl.Values[wire.DeadLetterSizeField])
				assert.Equal(t, "1", dl.Values[wire.DeadLetterFieldsField])
				assert.NotContains(t, dl.Values, DataField)
			} else {
				for k, v := range bad[i].values {
					assert.Equal(t, v, dl.Values[k], "original field %q kept", k)
				}
			}
			assert.Equal(t, "1", dl.Values[DeadLetterDeliveriesField])
			assert.Equal(t, "c1", dl.Values[DeadLetterConsumerField])
			assert.Equal(t, stream, dl.Values[DeadLetterStreamField])
		}
		eventually(t, func() bool { return pendingCount(t, b.rdb, stream, "g") == 0 }, "poison left pending")
	})
}

func TestInvalidTaskIsDeadLettered(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		// A registry that holds a task without session or tool call (one a
		// Python service wrote, say): the consumer's rule refuses it.
		reg := &MemoryRegistry{RequiredFields: []string{}}
		require.NoError(t, reg.Register(Task{TaskID: "t-1", OperationID: "op-1"}))
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, reg, h, testConfig(stream))
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		eventually(t, func() bool { return len(deadLetters(t, b.rdb, stream)) == 1 }, "not dead-lettered")
		dl := deadLetters(t, b.rdb, stream)[0]
		assert.Equal(t, ReasonInvalidTask, dl.Values[DeadLetterReasonField])
		assert.Contains(t, dl.Values[DeadLetterErrorField], "SessionID")
		assert.Empty(t, h.all())
	})
}

func TestStreamDeletedWhileRunningIsRecreated(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(3), h, testConfig(stream))
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		h.next(t)
		require.NoError(t, b.rdb.Del(ctx, stream).Err())
		// Published after the deletion: the recreated group must start at 0
		// and so deliver both.
		eventually(t, func() bool {
			groups, err := b.rdb.XInfoGroups(ctx, stream).Result()
			return err == nil && len(groups) == 1
		}, "group not recreated")
		publish(t, b.rdb, stream, Message{OperationID: "op-2", TaskID: "t-2", Success: true})
		publish(t, b.rdb, stream, Message{OperationID: "op-3", TaskID: "t-3", Success: true})
		got := []string{h.next(t).Message.OperationID, h.next(t).Message.OperationID}
		assert.ElementsMatch(t, []string{"op-2", "op-3"}, got)
	})
}

func TestStreamDeletedBeforeGroupRecreatedKeepsNewEntries(t *testing.T) {
	// The stream is deleted and recreated by a producer before the consumer
	// notices: the group must be created from 0, not $, so the producer's
	// entry is not skipped.
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		h := newRecorder()
		c := newTestConsumer(t, b.rdb, registryWith(2), h, cfg)
		startConsumer(t, c)
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		h.next(t)
		_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, stream)
			p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"data": `{"operation_id":"op-2","task_id":"t-2","success":true,"result":null,"error":null}`}})
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, "op-2", h.next(t).Message.OperationID)
	})
}

func TestShutdownWhileBlocked(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		if b.real {
			// On a real server the blocked read is interrupted: Run must
			// return long before the block would end.
			cfg.Block = time.Minute
		}
		c := newTestConsumer(t, b.rdb, registryWith(1), newRecorder(), cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		eventually(t, func() bool { return c.State() == StateRunning }, "not running")
		if b.real {
			// Wait until the read is really blocked on the server.
			eventually(t, func() bool {
				list, err := b.rdb.ClientList(context.Background()).Result()
				return err == nil && strings.Contains(list, "cmd=xreadgroup") && strings.Contains(list, "flags=b")
			}, "no blocked XREADGROUP")
		}
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after cancellation while blocked")
		}
		assert.Equal(t, StateIdle, c.State())
	})
}

func TestShutdownWaitsForRunningHandler(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		started, release := make(chan struct{}), make(chan struct{})
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			close(started)
			<-release
			return nil
		})
		c := newTestConsumer(t, b.rdb, registryWith(1), h, testConfig(stream))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		<-started
		cancel()
		select {
		case <-done:
			t.Fatal("Run returned while a handler was running")
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		require.NoError(t, <-done)
		assert.Equal(t, int64(0), pendingCount(t, b.rdb, stream, "g"), "the finished handler's entry must be acked")
	})
}

func TestShutdownTimeoutCancelsHandlerAndLeavesEntryPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		stream := uniqueStream(t, b.rdb)
		cfg := testConfig(stream)
		cfg.ShutdownTimeout = 100 * time.Millisecond
		started := make(chan struct{})
		h := HandlerFunc(func(ctx context.Context, c *Completion) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
		c := newTestConsumer(t, b.rdb, registryWith(1), h, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		publish(t, b.rdb, stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		<-started
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, int64(1), pendingCount(t, b.rdb, stream, "g"), "an unfinished entry must stay pending")
		assert.Empty(t, deadLetters(t, b.rdb, stream))
	})
}

func TestRunTwiceConcurrentlyIsRefused(t *testing.T) {
	mr := newMini(t)
	c := newTestConsumer(t, mr, registryWith(1), newRecorder(), testConfig("s"))
	startConsumer(t, c)
	eventually(t, func() bool { return c.State() == StateRunning }, "not running")
	err := c.Run(context.Background())
	assert.ErrorIs(t, err, ErrRunning)
}

func TestNewConsumerValidatesConfig(t *testing.T) {
	rdb := newMini(t)
	reg, h := registryWith(1), newRecorder()
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"block under 1ms", Config{Block: time.Microsecond}, "Block"},
		{"negative block", Config{Block: -time.Second}, "Block"},
		{"negative batch", Config{BatchSize: -1}, "BatchSize"},
		{"negative concurrency", Config{Concurrency: -2}, "Concurrency"},
		{"negative max deliveries", Config{MaxDeliveries: -1}, "MaxDeliveries"},
		{"negative claim idle", Config{ClaimMinIdle: -time.Second}, "ClaimMinIdle"},
		{"lease not shorter than claim idle", Config{ClaimMinIdle: time.Second, LeaseInterval: time.Second}, "LeaseInterval"},
		{"lease over half the claim idle", Config{ClaimMinIdle: time.Second, LeaseInterval: 600 * time.Millisecond}, "LeaseInterval"},
		{"retry cap below base", Config{RetryBackoff: time.Minute, MaxRetryBackoff: time.Second}, "MaxRetryBackoff"},
		{"error cap below base", Config{ErrorBackoff: time.Minute, MaxErrorBackoff: time.Second}, "MaxErrorBackoff"},
		{"dead letter is the stream", Config{Stream: "s", DeadLetterStream: "s"}, "DeadLetterStream"},
		{"unknown policy", Config{NotFound: NotFoundPolicy(9)}, "NotFound"},
		{"negative payload", Config{MaxPayloadBytes: -1}, "MaxPayloadBytes"},
		{"negative shutdown", Config{ShutdownTimeout: -1}, "ShutdownTimeout"},
		{"negative dedup", Config{DedupTTL: -time.Second}, "DedupTTL"},
		{"negative dead letter maxlen", Config{DeadLetterMaxLen: -1}, "DeadLetterMaxLen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewConsumer(rdb, reg, h, tt.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	t.Run("nil arguments", func(t *testing.T) {
		_, err := NewConsumer(nil, reg, h, Config{})
		assert.ErrorContains(t, err, "client is nil")
		_, err = NewConsumer(rdb, nil, h, Config{})
		assert.ErrorContains(t, err, "registry is nil")
		_, err = NewConsumer(rdb, reg, nil, Config{})
		assert.ErrorContains(t, err, "handler is nil")
	})
	t.Run("defaults", func(t *testing.T) {
		c, err := NewConsumer(rdb, reg, h, Config{})
		require.NoError(t, err)
		cfg := c.Config()
		assert.Equal(t, DefaultStream, cfg.Stream)
		assert.Equal(t, DefaultGroup, cfg.Group)
		assert.Equal(t, "{chat:completions}:dead", cfg.DeadLetterStream)
		assert.Equal(t, keys.Slot(cfg.Stream), keys.Slot(cfg.DeadLetterStream), "the dead-letter stream must share the stream's cluster slot")
		assert.Equal(t, defaultClaimMinIdle, cfg.ClaimMinIdle)
		assert.Equal(t, defaultClaimMinIdle/3, cfg.LeaseInterval)
		assert.Equal(t, defaultBlock, cfg.Block)
		assert.NotEmpty(t, cfg.Consumer)
		c2, err := NewConsumer(rdb, reg, h, Config{})
		require.NoError(t, err)
		assert.NotEqual(t, cfg.Consumer, c2.Config().Consumer, "default consumer names must be unique")
	})
}

// Every go-redis client kind fits the interfaces.
var (
	_ RedisClient = (*redis.Client)(nil)
	_ RedisClient = (*redis.ClusterClient)(nil)
	_ RedisClient = (*redis.Ring)(nil)
	_ RedisClient = redis.UniversalClient(nil)
	_ XAdder      = (*redis.Client)(nil)
	_ XAdder      = (*redis.ClusterClient)(nil)
	_ XAdder      = (*redis.Ring)(nil)
	_ XAdder      = redis.UniversalClient(nil)
	_ XAdder      = redis.Pipeliner(nil)
)

func TestDeadLetterStreamFor(t *testing.T) {
	tests := []struct{ stream, want string }{
		{"chat:completions", "{chat:completions}:dead"},
		{"{orders}:done", "{orders}:done:dead"},
		{"s:{p1}:x", "s:{p1}:x:dead"},
	}
	for _, tt := range tests {
		got := DeadLetterStreamFor(tt.stream)
		assert.Equal(t, tt.want, got)
		assert.Equal(t, keys.Slot(tt.stream), keys.Slot(got), "%s and %s must share a slot", tt.stream, got)
	}
	// A name with braces but no usable tag cannot be wrapped.
	assert.Equal(t, "a{}b:dead", DeadLetterStreamFor("a{}b"))
}

func TestKeySlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT on Redis 7.0.
	assert.Equal(t, uint16(12182), keys.Slot("foo"))
	assert.Equal(t, uint16(5061), keys.Slot("bar"))
	assert.Equal(t, keys.Slot("user1000"), keys.Slot("{user1000}.following"))
}
