// Package browsertest drives a headless Chromium (Debian's chromium) with
// chromedp, for tests that need a real browser: the dashboard's. It is a
// module of its own, so that chromedp never enters the library's go.mod.
//
// Run its tests with `cd browsertest && go test ./...`. Without a chromium
// binary they skip, or fail when the CI environment variable is set.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Binary returns the path of the Chromium to drive: $CHROMIUM when set,
// otherwise /usr/bin/chromium or the first of chromium, chromium-browser
// and google-chrome on PATH; "" when there is none.
func Binary() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	if fi, err := os.Stat("/usr/bin/chromium"); err == nil && !fi.IsDir() {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// StartTimeout is how long [New] waits for the browser to start: 60s.
const StartTimeout = 60 * time.Second

// New starts a headless Chromium with a fresh profile for t and returns a
// chromedp context of a tab in it; the browser is closed (and its
// processes reaped) when t ends. Without a Chromium it skips t, or fails it
// under CI=true (install it with apt-get install chromium).
func New(t testing.TB) context.Context {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("browsertest: no chromium found (/usr/bin/chromium, $CHROMIUM or PATH); CI must install it: apt-get install -y chromium")
		}
		t.Skip("browsertest: no chromium found; install it (apt-get install chromium) or set CHROMIUM to run the browser tests")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
	})
	// Start the browser now, to report a failure here. Its first run must
	// not have a timeout of its own (that would end the browser), so it is
	// bounded by a timer instead: on a timeout t's cleanup ends the browser,
	// which ends the run.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("browsertest: start %s: %v", bin, err)
		}
	case <-timer.C:
		t.Fatalf("browsertest: %s did not start within %v", bin, StartTimeout)
	}
	return ctx
}
