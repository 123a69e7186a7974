package taskstream

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/internal/redistest"
)

var (
	_ Client = (*redis.Client)(nil)
	_ Client = (*redis.ClusterClient)(nil)
	_ Client = redis.UniversalClient(nil)
)

func newMini(t testing.TB) (*redis.Client, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, mr
}

func TestNewDefaults(t *testing.T) {
	rdb, _ := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	assert.Equal(t, Config{Prefix: "chat:stream:", ChannelPrefix: "chat:task:pubsub:", MaxLen: 10000, TTL: time.Hour}, s.Config())
	assert.Equal(t, "chat:stream:t-1", s.Key("t-1"))
	assert.Equal(t, "chat:task:pubsub:t-1", s.Channel("t-1"))
	cfg := Config{Prefix: "p:", ChannelPrefix: "c:", MaxLen: 5, TTL: time.Minute}
	assert.Equal(t, cfg, newTestStreams(t, rdb, cfg).Config())
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	rdb, _ := newMini(t)
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"negative MaxLen", Config{MaxLen: -1}, "MaxLen"},
		{"negative TTL", Config{TTL: -time.Second}, "TTL"},
		{"sub-millisecond TTL", Config{TTL: time.Microsecond}, "TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(rdb, tt.cfg)
			require.ErrorIs(t, err, completion.ErrInvalidConfig)
			assert.Contains(t, err.Error(), "Config."+tt.field)
		})
	}
	t.Run("nil client", func(t *testing.T) {
		_, err := New(nil, Config{})
		require.ErrorIs(t, err, completion.ErrNilArgument)
		_, err = New((*redis.Client)(nil), Config{})
		require.ErrorIs(t, err, completion.ErrNilArgument)
	})
}

func TestAppendPythonLayout(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		cfg := testConfig(t, b)
		s := newTestStreams(t, b.Client, cfg)
		ps := b.Client.Subscribe(ctx, s.Channel("t-1"))
		t.Cleanup(func() { _ = ps.Close() })
		_, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		require.NoError(t, err)

		event := json.RawMessage(`{"type":"text-delta","delta":"héllo <b>&</b>"}`)
		id, err := s.Append(ctx, "t-1", event)
		require.NoError(t, err)
		msgs, err := b.Client.XRange(ctx, s.Key("t-1"), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		assert.Equal(t, id, msgs[0].ID)
		assert.Equal(t, map[string]any{"data": string(event)}, msgs[0].Values, "one field, data, as the Python service writes")
		ttl, err := b.Client.PTTL(ctx, s.Key("t-1")).Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, 59*time.Minute)
		assert.LessOrEqual(t, ttl, time.Hour)
		m, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, string(event), m.(*redis.Message).Payload, "the event, on the Python channel")

		fid, err := s.Finish(ctx, "t-1")
		require.NoError(t, err)
		evs, err := s.Read(ctx, "t-1", id, 0)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		assert.Equal(t, fid, evs[0].ID)
		assert.Equal(t, FinishEvent, string(evs[0].Data))
		assert.True(t, evs[0].IsFinish())
		assert.Equal(t, "finish", evs[0].Type())
	})
}

func TestAppendRefusesBadInputBeforeRedis(t *testing.T) {
	rdb, mr := newMini(t)
	s := newTestStreams(t, rdb, Config{})
	ctx := context.Background()
	tests := []struct {
		name   string
		taskID string
		event  string
		want   error
	}{
		{"empty task id", "", `{}`, ErrInvalidTaskID},
		{"task id too long", strings.Repeat("x", MaxTaskIDBytes+1), `{}`, ErrInvalidTaskID},
		{"task id not UTF-8", "t-\xff", `{}`, ErrInvalidTaskID},
		{"event not JSON", "t-1", `{"type":`, ErrInvalidEvent},
		{"event empty", "t-1", ``, ErrInvalidEvent},
		{"event not UTF-8", "t-1", "{\"a\":\"\xff\"}", ErrInvalidEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(ctx, tt.taskID, json.RawMessage(tt.event))
			require.ErrorIs(t, err, tt.want)
			assert.Empty(t, mr.Keys(), "nothing written")
		})
	}
	_, err := s.Append(ctx, strings.Repeat("x", MaxTaskIDBytes), json.RawMessage(`{}`))
	require.NoError(t, err, "a task id of MaxTaskIDBytes is fine")
}

func TestReadAfter(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		var ids []string
		for i := range 5 {
			id, err := s.Append(ctx, "t-1", ev(i))
			require.NoError(t, err)
			ids = append(ids, id)
		}
		for _, after := range []string{"", "0", "0-0"} {
			evs, err := s.Read(ctx, "t-1", after, 0)
			require.NoError(t, err)
			assert.Len(t, evs, 5, "after %q", after)
		}
		evs, err := s.Read(ctx, "t-1", ids[1], 2)
		require.NoError(t, err)
		assert.Equal(t, []string{string(ev(2)), string(ev(3))}, datas(evs))
		evs, err = s.Read(ctx, "t-1", ids[4], 0)
		require.NoError(t, err)
		assert.Empty(t, evs)

		_, err = s.Read(ctx, "t-1", "12-x", 0)
		require.ErrorIs(t, err, ErrInvalidID)
		evs, err = s.Read(ctx, "no-such-task", "0-0", 0)
		require.NoError(t, err)
		assert.Empty(t, evs)
		assert.Zero(t, b.Client.Exists(ctx, s.Key("no-such-task")).Val(), "a read creates no stream")
	})
}

// Streams the Python service wrote (XADD MAXLEN ~ 10000 * data <json>)
// replay byte for byte.
func TestPythonWrittenStreamReplaysUnchanged(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := newTestStreams(t, b.Client, testConfig(t, b))
		h := startHub(t, s, HubConfig{})
		python := []string{
			`{"type":"start","messageId":"m-1"}`,
			`{"type": "text-delta", "id": "1", "delta": "ünïcode \u00e9 <&>"}`,
			`{"type":"tool-output-available","toolCallId":"call-1","toolName":"create_agent","output":"{\"status\":\"completed\"}","success":true}`,
			`{"type":"finish"}`,
		}
		for _, data := range python {
			require.NoError(t, b.Client.XAdd(ctx, &redis.XAddArgs{Stream: s.Key("py-1"), MaxLen: 10000, Approx: true, Values: []any{"data", data}}).Err())
		}
		sub, err := h.Subscribe(ctx, "py-1", "0-0")
		require.NoError(t, err)
		evs, err := collect(t, sub)
		require.True(t, errors.Is(err, io.EOF), "%v", err)
		assert.Equal(t, python, datas(evs))
	})
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in   string
		want streamID
		ok   bool
	}{
		{"", streamID{}, true},
		{"0", streamID{}, true},
		{"0-0", streamID{}, true},
		{"1526919030474-55", streamID{1526919030474, 55}, true},
		{"18446744073709551615-18446744073709551615", streamID{1<<64 - 1, 1<<64 - 1}, true},
		{"18446744073709551616-0", streamID{}, false},
		{"12", streamID{}, false},
		{"12-", streamID{}, false},
		{"-1", streamID{}, false},
		{"1--1", streamID{}, false},
		{"+1-1", streamID{}, false},
		{"1-1 ", streamID{}, false},
		{"$", streamID{}, false},
		{"abc", streamID{}, false},
	}
	for _, tt := range tests {
		got, err := parseID(tt.in)
		if !tt.ok {
			assert.ErrorIs(t, err, ErrInvalidID, "%q", tt.in)
			continue
		}
		require.NoError(t, err, "%q", tt.in)
		assert.Equal(t, tt.want, got, "%q", tt.in)
	}
}
