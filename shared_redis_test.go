package completion

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/streamrelay/completion/internal/redistest"
)

// shared is the real Redis of the behaviour suite: REDIS_ADDR when set,
// otherwise one redis-server the package's tests spawn on first use and
// TestMain stops. Tests that kill, pause or restart Redis start their own.
var shared struct {
	once sync.Once
	srv  *redistest.Server
	err  error
}

// sharedRedisAddr returns the address of the real Redis for tests that
// inject no faults. Without a redis-server binary it skips the test, or
// fails it under CI=true.
func sharedRedisAddr(t testing.TB) string {
	t.Helper()
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	shared.once.Do(func() { shared.srv, shared.err = redistest.Launch(redistest.Options{}) })
	switch {
	case shared.err == nil:
		return shared.srv.Addr()
	case errors.Is(shared.err, redistest.ErrNoBinary) && os.Getenv("CI") == "":
		t.Skipf("%v: install redis-server (apt-get install redis-server) or set REDIS_ADDR to run the real-Redis tests", shared.err)
	default:
		t.Fatalf("real Redis for the behaviour suite: %v (CI must provide redis-server; see .ci/run)", shared.err)
	}
	return ""
}

func stopSharedRedis() {
	if shared.srv != nil {
		shared.srv.Close()
	}
}
