package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// shared is the real Redis a test binary's behaviour tests share:
// REDIS_ADDR when set, otherwise one server launched on first use and
// stopped by Main.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs a package's tests, stops the shared server if one was launched,
// and, when the tests passed, fails if goroutines running this module's
// code outlive them by more than 5 s (a leak). Call it from TestMain:
// os.Exit(redistest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Close()
	}
	if code == 0 {
		if leaks := leakedGoroutines(5 * time.Second); leaks != "" {
			fmt.Fprintf(os.Stderr, "goroutines of this module are still running after the tests:\n%s\n", leaks)
			code = 1
		}
	}
	return code
}

// leakedGoroutines waits up to d for goroutines running this module's code
// (outside tests themselves) to exit, and returns the stacks of those that
// remain.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		var leaks []string
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/streamrelay/completion") &&
				!strings.Contains(g, "testing.tRunner") &&
				!strings.Contains(g, "redistest.Main") &&
				!strings.Contains(g, "redistest.leakedGoroutines") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SharedAddr returns the address of a real Redis for tests that inject no
// faults: REDIS_ADDR when set, otherwise a server launched once for the
// whole test binary (see Main). Without a redis-server binary it skips the
// test, or fails it when CI is set.
func SharedAddr(t testing.TB) string {
	t.Helper()
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	shared.once.Do(func() { shared.srv, shared.err = Launch(Options{}) })
	switch {
	case shared.err == nil:
		return shared.srv.Addr()
	case errors.Is(shared.err, ErrNoBinary) && os.Getenv("CI") == "":
		t.Skipf("%v: install redis-server (apt-get install redis-server) or set REDIS_ADDR to run the real-Redis tests", shared.err)
	default:
		t.Fatalf("real Redis for the behaviour tests: %v (CI must provide redis-server; see .ci/run)", shared.err)
	}
	return ""
}

// SharedClient returns a client of SharedAddr, closed when the test ends.
func SharedClient(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: SharedAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Backend is a Redis a behaviour test runs against.
type Backend struct {
	Name   string // "miniredis" or "redis"
	Real   bool   // a real redis-server
	Client *redis.Client
	Mini   *miniredis.Miniredis // set for miniredis
}

// EachBackend runs f as two subtests: against a fresh miniredis, and against
// the shared real Redis (see SharedAddr).
func EachBackend(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		f(t, Backend{Name: "miniredis", Client: rdb, Mini: mr})
	})
	t.Run("redis", func(t *testing.T) {
		f(t, Backend{Name: "redis", Real: true, Client: SharedClient(t)})
	})
}

// Key formats a key from the test's name (braces and slashes replaced) and
// a random number, with format's first verb taking the name and its second
// the number (e.g. "test:{%s:%08x}" for a key in a hash tag of its own), and
// deletes every key it prefixes when the test ends, so that a shared Redis
// is left as it was.
func Key(t testing.TB, rdb *redis.Client, format string) string {
	t.Helper()
	name := strings.NewReplacer("/", ":", " ", "_", "{", "", "}", "").Replace(t.Name())
	key := fmt.Sprintf(format, name, rand.Uint32())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, _ := rdb.Keys(ctx, key+"*").Result()
		if len(keys) > 0 {
			_ = rdb.Del(ctx, keys...).Err()
		}
	})
	return key
}
