package taskstream

import (
	"os"
	"testing"

	"github.com/streamrelay/completion/internal/redistest"
)

func TestMain(m *testing.M) {
	os.Exit(redistest.Main(m))
}
