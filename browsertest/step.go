package browsertest

// Every step a test takes in the browser is bounded: a step that waits for
// something that never happens fails the test within its timeout, naming
// the step and saying what the page showed, instead of hanging until the
// test binary's timeout.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// StepTimeout is how long [Step] lets one step in the browser take: 20s.
// A step normally takes well under a second, even under -race.
const StepTimeout = 20 * time.Second

// describeTimeout bounds each of [Describe]'s reads of the page, so that a
// page that does not answer does not hang the report of a failure.
const describeTimeout = 3 * time.Second

// excerptLen is how much of the page's text [Describe] shows.
const excerptLen = 400

// Step runs action in the tab of ctx (a context of [New]) within
// [StepTimeout] and returns its result. When the action fails or times
// out, Step fails t with the step's name, the error and what the page
// shows (see [Describe]).
func Step[T any](t testing.TB, ctx context.Context, name string, action chromedp.Action[T]) T {
	t.Helper()
	return StepWithin(t, ctx, StepTimeout, name, action)
}

// StepWithin is [Step] with a timeout of its own, for a step that waits
// for something slower, such as a process's restart.
func StepWithin[T any](t testing.TB, ctx context.Context, timeout time.Duration, name string, action chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	v, err := chromedp.Run(sctx, action)
	if err != nil {
		t.Fatalf("browsertest: step %q failed after %v (timeout %v): %v\n%s", name, time.Since(start).Round(time.Millisecond), timeout, err, Describe(ctx))
	}
	return v
}

// Navigation is an action that runs steps which start one navigation of
// the tab, such as a click on a form's button, and waits until the page it
// leads to has loaded. It returns that page's HTTP response (after
// redirects). Steps that start no navigation make it wait until its
// context ends; steps that start two make it wait for the first only, so
// give each navigation a Navigation of its own.
//
// Wait for the new page this way rather than for an element: an element
// the old page also has is found on the old page, and what follows then
// runs while the document is being replaced.
func Navigation(steps ...chromedp.Action[chromedp.Void]) chromedp.Action[*network.Response] {
	return func(ctx context.Context, _ *chromedp.Target) (*network.Response, error) {
		return chromedp.RunResponse(ctx, steps...)
	}
}

// Describe returns what the tab of ctx shows, for a failure's message: its
// current URL, its document's readyState and the start of its text. It
// takes a few seconds at most, even when the page does not answer (it then
// says why it could not read it).
func Describe(ctx context.Context) string {
	var b strings.Builder
	hctx, cancel := context.WithTimeout(ctx, describeTimeout)
	h, err := chromedp.Run(hctx, chromedp.NavigationEntries())
	cancel()
	switch {
	case err != nil:
		fmt.Fprintf(&b, "  url: unknown (%v)\n", err)
	case h.CurrentIndex >= 0 && int(h.CurrentIndex) < len(h.Entries):
		fmt.Fprintf(&b, "  url: %s\n", h.Entries[h.CurrentIndex].URL)
	}
	tctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	page, err := chromedp.Run(tctx, chromedp.Evaluate[pageState](`({state: document.readyState, text: document.body ? document.body.innerText : ""})`))
	if err != nil {
		fmt.Fprintf(&b, "  page: not readable (%v)", err)
		return b.String()
	}
	fmt.Fprintf(&b, "  readyState: %s\n  text: %q", page.State, excerpt(page.Text))
	return b.String()
}

// pageState is what [Describe] reads of the document.
type pageState struct {
	State string `json:"state"`
	Text  string `json:"text"`
}

// excerpt returns the start of text with its runs of white space made one
// space.
func excerpt(text string) string {
	s := strings.Join(strings.Fields(text), " ")
	if r := []rune(s); len(r) > excerptLen {
		return string(r[:excerptLen]) + "…"
	}
	return s
}
