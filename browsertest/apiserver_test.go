package browsertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/browsertest"
	"github.com/streamrelay/completion/internal/redistest"
)

// taskItem is what the example's page shows for a task (its <li>'s data
// attributes).
type taskItem struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Outcomes   string `json:"outcomes"`
	Dupes      string `json:"dupes"`
	Events     string `json:"events"`
	Reconnects string `json:"reconnects"`
	Finished   string `json:"finished"`
}

const readItems = `[...document.querySelectorAll("#tasks li")].map(li => ({id: li.querySelector("code").textContent, ...li.dataset}))`

// The example's page in headless chromium: its EventSources are connected
// to pod B (which serves HTTP only) while pod A consumes the completions;
// pod B is killed mid-run and started again; the page ends up showing every
// completion once, its EventSources having resumed with Last-Event-ID.
func TestApiserverPageSurvivesItsPodRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	bin := browsertest.Build(t, "..", "./examples/apiserver")
	env := []string{"REDIS_ADDR=" + srv.Addr()}
	args := []string{"-op-min", "1500ms", "-op-max", "6s", "-retry", "500ms"}
	browsertest.StartProcess(t, bin, env, "/healthz", args...) // pod A
	b := browsertest.StartProcess(t, bin, env, "/healthz", append(args, "-consume=false")...)

	ctx := browsertest.New(t)
	do(t, ctx, "open the page and start six tasks",
		chromedp.Navigate(b.URL("/?user=u-browser&session=s-browser")),
		chromedp.Click("#start5"),
		chromedp.Click("#start"),
	)
	waitFor(t, ctx, `document.querySelectorAll("#tasks li").length === 6`, 20*time.Second)
	waitFor(t, ctx, `document.querySelectorAll('#tasks li[data-finished="true"]').length >= 1`, 30*time.Second)
	b.Kill()
	unfinished := eval[int](t, ctx, `document.querySelectorAll('#tasks li[data-finished="false"]').length`)
	t.Logf("pod B killed with %d of 6 tasks unfinished on the page", unfinished)
	waitFor(t, ctx, `[...document.querySelectorAll('#tasks li[data-finished="false"]')].some(li => li.dataset.reconnects !== "0")`, 20*time.Second)
	b.Start("/healthz")
	waitFor(t, ctx, `document.querySelectorAll('#tasks li[data-finished="true"]').length === 6`, 60*time.Second)

	items := eval[[]taskItem](t, ctx, readItems)
	require.Len(t, items, 6)
	rdb := srv.Client(t)
	reconnected := 0
	for _, it := range items {
		assert.Equal(t, "1", it.Outcomes, "task %s: one outcome shown", it.ID)
		assert.Equal(t, "0", it.Dupes, "task %s: no event received twice", it.ID)
		assert.Equal(t, "4", it.Events, "task %s: start, progress, outcome, finish", it.ID)
		status, err := rdb.HGet(context.Background(), "chat:task:meta:"+it.ID, "status").Result()
		require.NoError(t, err)
		assert.Equal(t, status, it.Status, "task %s: the page shows the registry's status", it.ID)
		if it.Reconnects != "0" {
			reconnected++
		}
	}
	assert.Equal(t, unfinished, reconnected, "every task unfinished at the kill was resumed")

	screenshot(t, ctx, "browser-task-stream") // -update: the README's
}

// waitFor waits until the JavaScript expression cond is true in ctx's
// tab, checking it every 50ms, or fails the test after timeout, saying
// what the page showed.
func waitFor(t *testing.T, ctx context.Context, cond string, timeout time.Duration) {
	t.Helper()
	browsertest.StepWithin(t, ctx, timeout, "wait until "+cond,
		chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(0)))
}
