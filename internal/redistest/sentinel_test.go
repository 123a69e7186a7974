package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

func TestStartSentinelAndFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	before := s.MasterAddr(t)
	require.Equal(t, s.Servers()[0].Addr(), before)

	s.Failover(t)
	after := s.MasterAddr(t)
	require.Equal(t, s.Servers()[1].Addr(), after)
	require.Eventually(t, func() bool {
		v, err := c.Get(ctx, "k").Result()
		return err == nil && v == "v" && c.Set(ctx, "k2", "v2", 0).Err() == nil
	}, 30*time.Second, 50*time.Millisecond, "the failover client follows the new master")
}
