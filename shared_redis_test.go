package completion

import (
	"os"
	"testing"
)

// sharedRedisAddr returns the address of the real Redis the behaviour suite
// uses. TEMPORARY: replaced by a spawned server.
func sharedRedisAddr(t testing.TB) string {
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func stopSharedRedis() {}
