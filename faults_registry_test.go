package completion_test

// The registry-outage scenario lives in package completion_test because it
// uses redisregistry, which imports package completion; the suite's helpers
// reach it through faults_export_test.go.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
	"github.com/streamrelay/completion/redisregistry"
)

// TestFaultRegistryOutage: the consumers look tasks up in a
// redisregistry.Registry kept on a Redis of its own, and that Redis goes
// away while completions arrive: first it is killed and restarted (with
// its append-only file, so the tasks survive), then frozen (SIGSTOP), each
// time for 3 s (10 s in soak). A lookup that fails is a Redis error, not
// "task not found": no completion of a registered task may be
// dead-lettered as task_not_found (or otherwise), and every one must be
// handled once the registry is back. Completions of tasks that were never
// registered (one in twenty) are the control: they must still be
// dead-lettered as task_not_found.
func TestFaultRegistryOutage(t *testing.T) {
	t.Parallel()
	scale := completion.FaultScale(t)
	outage := 3 * time.Second
	if scale > 1 {
		outage = 10 * time.Second
	}
	srv := redistest.Start(t, redistest.Options{})
	regSrv := redistest.Start(t, redistest.Options{AppendOnly: true})
	stream := "faults:registry"
	led := completion.NewFaultLedger()
	rdb := completion.FaultClient(t, srv.Addr(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	regClient := func() *redis.Client {
		return completion.FaultClient(t, regSrv.Addr(), func(o *redis.Options) {
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		})
	}

	// The tasks, registered long before their completions arrive (as the
	// API server does when it starts an operation); one in twenty is not.
	rate := 150.0
	n := int((2*outage + 4*time.Second).Seconds() * rate)
	producer, err := redisregistry.New(regClient(), redisregistry.Config{})
	require.NoError(t, err)
	msgs := make([]completion.Message, n)
	unknown := 0
	for i := range msgs {
		m := completion.FaultMessage("reg", i)
		if i%20 == 19 {
			m.TaskID = fmt.Sprintf("never-registered-%d", i)
			unknown++
		} else {
			require.NoError(t, producer.Register(ctx, completion.Task{TaskID: m.TaskID, SessionID: "s-" + m.TaskID, ToolCallID: "tc", OperationID: m.OperationID}))
		}
		msgs[i] = m
	}

	var stops []func() error
	var consumers []*completion.Consumer
	for _, name := range []string{"c1", "c2"} {
		reg, err := redisregistry.New(regClient(), redisregistry.Config{})
		require.NoError(t, err)
		cfg := completion.FaultConfig(stream, name, completion.FaultLogger(t, name))
		cfg.RetryBackoff, cfg.MaxRetryBackoff = 50*time.Millisecond, time.Second // 50 deliveries outlast any outage
		c, err := completion.NewConsumer(completion.FaultClient(t, srv.Addr(), nil), reg, led.Handler(name, 0, 2*time.Millisecond), cfg)
		require.NoError(t, err)
		consumers = append(consumers, c)
		stops = append(stops, completion.StartConsumer(t, c))
	}
	dlStream := consumers[0].Config().DeadLetterStream

	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		start := time.Now()
		for i, m := range msgs {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second))))):
			}
			id, err := completion.Publish(ctx, rdb, stream, m, completion.WithMaxLen(0))
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			want := ""
			if i%20 == 19 {
				want = completion.ReasonTaskNotFound
			}
			led.Published(m.OperationID, id, want)
		}
	}()
	defer func() { cancel(); <-pubDone }()

	completion.FaultHold(time.Second) // traffic first
	regSrv.Kill()
	completion.FaultHold(outage) // the fault's own duration
	regSrv.Restart()
	t.Logf("registry Redis killed for %v, restarted", outage)
	completion.FaultHold(time.Second)
	regSrv.Pause()
	completion.FaultHold(outage)
	regSrv.Resume()
	t.Logf("registry Redis frozen for %v, resumed", outage)
	<-pubDone

	ok := completion.WaitProgress(completion.FaultWait(n), func() bool {
		return led.Unhandled() == 0 && completion.PendingOf(rdb, stream, "g") == 0 && led.DeadLettersReady(rdb, dlStream)
	})
	if !ok {
		t.Errorf("not settled: %d ids unhandled, %d pending", led.Unhandled(), completion.PendingOf(rdb, stream, "g"))
	}
	for _, stop := range stops {
		assert.NoError(t, stop(), "Run's error")
	}
	var failed int64
	for i, c := range consumers {
		st := c.Stats()
		failed += st.Failed
		t.Logf("c%d stats: delivered=%d succeeded=%d failed=%d retried=%d dead_lettered=%d last_error=%q", i+1,
			st.Delivered, st.Handled, st.Failed, st.Retried, st.DeadLettered, st.LastError)
	}
	res := led.Finish(t, rdb, dlStream, "registry-outage", 2)
	assert.Zero(t, res.Lost, "lost ids (a registered task dead-lettered, or not handled)")
	assert.Equal(t, unknown, res.DeadLetters[completion.ReasonTaskNotFound], "task_not_found dead letters: only the tasks never registered")
	assert.Equal(t, unknown, res.DeadLettered, "dead letters")
	assert.Positive(t, failed, "no lookup failed: the outage did not bite")
}
