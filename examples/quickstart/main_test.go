package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }

// The example prints the same story on the embedded miniredis and on a real
// Redis, and leaves no key behind.
func TestQuickstart(t *testing.T) {
	want := []string{
		"published: op-render (success=true)",
		"published: op-payment (success=false)",
		"published: op-unknown (success=true)",
		`pod B, task-1's stream: {"type":"tool-output-available","toolCallId":"call-1","toolName":"render","output":"{\"pages\":3,\"url\":\"https://example.com/r/1?a=1&b=2\"}","success":true}`,
		`pod B, task-1's stream: {"type":"finish"}`,
		`pod B, awaited op-payment: success=false error="card declined"`,
		`dead-lettered: reason task_not_found, error "completion: task not found: operation \"op-unknown\", task \"task-9\""`,
		"stopped cleanly: handled=2 dead_lettered=1 in_flight=0",
	}
	for _, tc := range []struct{ name, addr string }{
		{"miniredis", ""},
		{"redis", redistest.SharedAddr(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			require.NoError(t, run(&out, tc.addr))
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			require.NotEmpty(t, lines)
			assert.Equal(t, want, lines[1:], "after the line naming the Redis")
			if tc.addr != "" {
				keys, err := redistest.SharedClient(t).Keys(t.Context(), "*quickstart:*").Result()
				require.NoError(t, err)
				assert.Empty(t, keys, "keys left behind")
			}
		})
	}
}
