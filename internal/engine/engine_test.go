package engine

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/clock"
	"github.com/streamrelay/completion/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }

var (
	errFatal    = errors.New("fatal")
	errStart    = errors.New("start")
	errShutdown = errors.New("shutdown")
)

// stepProcessor returns the outcomes it is given, one per call, and tells
// each call on calls.
type stepProcessor struct {
	outcomes []Outcome
	calls    chan *Delivery
}

func (p *stepProcessor) Prefetch(context.Context, []*Delivery) {}

func (p *stepProcessor) Process(_ context.Context, d *Delivery) Outcome {
	p.calls <- d
	if len(p.outcomes) == 0 {
		return Outcome{Kind: Ack}
	}
	out := p.outcomes[0]
	p.outcomes = p.outcomes[1:]
	return out
}

// testEngine returns an engine on a fresh miniredis stream, on a fake
// clock, and the client.
func testEngine(t *testing.T, p Processor) (*Engine, *clock.Fake, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	e := New(Params{
		Client: rdb, Stream: "s", DeadLetterStream: "{s}:dead", Group: "g", Consumer: "c",
		Settings: Settings{
			Block: 20 * time.Millisecond, ClaimMinIdle: time.Minute, ClaimInterval: time.Minute, LeaseInterval: 20 * time.Second,
			AckDelay: time.Millisecond, ShutdownTimeout: time.Second, ErrorBackoff: time.Millisecond, MaxErrorBackoff: time.Millisecond,
			StaleConsumerAge: time.Hour, BatchSize: 10, Concurrency: 2, MaxPayloadBytes: 1 << 20, MaxIDBytes: 512,
			MaxErrorBytes: 1 << 16, MaxReadAheadBytes: 64 << 20,
		},
		Processor: p, Stats: &Stats{}, Log: slog.New(slog.DiscardHandler), Clock: fake,
		ErrRedisFatal: errFatal, ErrStartTimeout: errStart, ErrShutdownTimeout: errShutdown,
	})
	return e, fake, rdb
}

func runEngine(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
}

func next(t *testing.T, calls <-chan *Delivery) *Delivery {
	t.Helper()
	select {
	case d := <-calls:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the processor was not called")
		return nil
	}
}

// TestRetryWaitsOnTheEnginesClock: a retry is due after its delay on the
// engine's clock: an hour's backoff passes when the test moves the clock,
// and the entry is then claimed back and delivered a second time.
func TestRetryWaitsOnTheEnginesClock(t *testing.T) {
	p := &stepProcessor{outcomes: []Outcome{{Kind: Retry, Delay: time.Hour, Err: errors.New("later")}}, calls: make(chan *Delivery, 4)}
	e, fake, rdb := testEngine(t, p)
	require.NoError(t, rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "s", Values: []any{"data",
		`{"operation_id":"op","task_id":"t","success":true,"result":null,"error":null}`}}).Err())
	runEngine(t, e)
	first := next(t, p.calls)
	assert.EqualValues(t, 1, first.Count)
	require.Eventually(t, func() bool { return e.p.Stats.Retried.Load() == 1 }, 10*time.Second, time.Millisecond)
	select {
	case <-p.calls:
		t.Fatal("delivered again before its backoff")
	default:
	}
	fake.Advance(time.Hour)
	second := next(t, p.calls)
	assert.Equal(t, first.ID, second.ID)
	assert.EqualValues(t, 2, second.Count, "XCLAIM counted the delivery")
	// The acknowledgement waits AckDelay on the same clock.
	require.Eventually(t, func() bool {
		fake.Advance(time.Millisecond)
		n, err := rdb.XPending(context.Background(), "s", "g").Result()
		return err == nil && n.Count == 0
	}, 10*time.Second, time.Millisecond, "not acknowledged")
}

// TestLeaserRenewsOnTheEnginesClock: the leaser runs every LeaseInterval
// of the engine's clock.
func TestLeaserRenewsOnTheEnginesClock(t *testing.T) {
	release := make(chan struct{})
	p := &blockingProcessor{release: release, started: make(chan struct{}, 1)}
	e, fake, rdb := testEngine(t, p)
	passes := make(chan string, 100)
	e.p.Signal = func(job string) { passes <- job }
	require.NoError(t, rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "s", Values: []any{"data",
		`{"operation_id":"op","task_id":"t","success":true,"result":null,"error":null}`}}).Err())
	runEngine(t, e)
	defer close(release)
	<-p.started
	fake.Advance(e.p.LeaseInterval)
	for job := range passes {
		if job == "leaser" {
			break
		}
	}
	assert.Zero(t, e.p.Stats.RedisErrors.Load(), "the lease script ran on miniredis")
}

// blockingProcessor holds every delivery until release is closed.
type blockingProcessor struct {
	release chan struct{}
	started chan struct{}
}

func (p *blockingProcessor) Prefetch(context.Context, []*Delivery) {}

func (p *blockingProcessor) Process(ctx context.Context, _ *Delivery) Outcome {
	select {
	case p.started <- struct{}{}:
	default:
	}
	select {
	case <-p.release:
	case <-ctx.Done():
		return Outcome{Kind: Leave}
	}
	return Outcome{Kind: Ack}
}

// opProcessor holds the delivery of operation "hold" until release is
// closed, acknowledges every other one, and tells each call's operation id
// on calls.
type opProcessor struct {
	release chan struct{}
	calls   chan string
}

func (p *opProcessor) Prefetch(context.Context, []*Delivery) {}

func (p *opProcessor) Process(ctx context.Context, d *Delivery) Outcome {
	op := d.Msg.OperationID
	p.calls <- op
	if op == "hold" {
		select {
		case <-p.release:
		case <-ctx.Done():
			return Outcome{Kind: Leave}
		}
	}
	return Outcome{Kind: Ack}
}

// TestReadOfAResetGroupStartsANewEpoch: the stream is deleted and
// recreated, with its group, in one transaction while the engine holds an
// entry, so the engine gets no error; the new stream's first entry has the
// id of the held one. The engine must see the reset in the ids it reads
// and handle the new entry, not take it for a re-read of the held one (and
// acknowledge it unhandled when the held one finishes).
func TestReadOfAResetGroupStartsANewEpoch(t *testing.T) {
	ctx := context.Background()
	p := &opProcessor{release: make(chan struct{}), calls: make(chan string, 8)}
	e, fake, rdb := testEngine(t, p)
	entry := func(op string) []any {
		return []any{"data", `{"operation_id":"` + op + `","task_id":"t","success":true,"result":null,"error":null}`}
	}
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", ID: "5-0", Values: entry("hold")}).Err())
	runEngine(t, e)
	defer close(p.release)
	require.Equal(t, "hold", <-p.calls)

	_, err := rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Del(ctx, "s")
		tx.XGroupCreateMkStream(ctx, "s", "g", "0")
		tx.XAdd(ctx, &redis.XAddArgs{Stream: "s", ID: "5-0", Values: entry("new")})
		return nil
	})
	require.NoError(t, err)
	select {
	case op := <-p.calls:
		assert.Equal(t, "new", op)
	case <-time.After(10 * time.Second):
		t.Fatal("the new stream's entry, with the id of a held one, was not handled")
	}
	require.Eventually(t, func() bool {
		fake.Advance(time.Millisecond) // AckDelay
		n, err := rdb.XPending(ctx, "s", "g").Result()
		return err == nil && n.Count == 0
	}, 10*time.Second, time.Millisecond, "the new entry is not acknowledged")
}
