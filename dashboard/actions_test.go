package dashboard_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/redistest"
)

// actionStream is a stream with dead letters of two reasons and a
// dashboard with actions, seen from a browser that loaded the dead
// letters page (so it has its cookie and token).
type actionStream struct {
	stream string
	rdb    *redis.Client
	in     *inspect.Inspector
	b      *browser
	token  string
	ids    []string // the dead letters: 3 task_not_found, then 2 malformed
}

func newActionStream(t *testing.T, be redistest.Backend) *actionStream {
	t.Helper()
	a := &actionStream{stream: uniqueStream(t, be.Client), rdb: be.Client}
	for i := range 3 {
		a.ids = append(a.ids, deadLetter(t, be.Client, a.stream, completion.ReasonTaskNotFound, "task not found", "data", message(i)))
	}
	for range 2 {
		a.ids = append(a.ids, deadLetter(t, be.Client, a.stream, completion.ReasonMalformed, "not json", "data", "garbage"))
	}
	a.in = newInspector(t, be.Client, inspect.Config{Stream: a.stream, Group: "g"})
	h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{a.in}, Actions: true, Prefix: "/dash/"})
	a.b = newBrowser(t, h, "/dash/")
	code, page := a.b.get("/dead?stream=" + url.QueryEscape(a.stream))
	require.Equal(t, http.StatusOK, code, page)
	tokens := find(parseHTML(t, page), "input", "name", "csrf_token")
	require.NotEmpty(t, tokens, "the dead letters page has the actions form")
	a.token = tokens[0].Attrs["value"]
	require.NotEmpty(t, a.token)
	return a
}

// form returns an action's form, with the stream and the token, and the
// fields given as name, value pairs.
func (a *actionStream) form(kv ...string) url.Values {
	f := url.Values{"stream": {a.stream}, "csrf_token": {a.token}}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

// counts returns the number of dead letters and stream entries.
func (a *actionStream) counts(t *testing.T) (dead, entries int64) {
	t.Helper()
	si, err := a.in.Info(t.Context())
	require.NoError(t, err)
	return si.DeadLetterLength, si.Length
}

// TestActions: each action first asks for a confirmation (changing
// nothing), then moves or deletes each dead letter once.
func TestActions(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		for _, tc := range []struct {
			name          string
			action        string
			form          func(a *actionStream) []string
			dead, entries int64 // afterwards
			says          string
		}{
			{"redrive one", "redrive", func(a *actionStream) []string { return []string{"one", a.ids[0]} }, 4, 1, "Moved 1 dead letter back"},
			{"redrive selected", "redrive", func(a *actionStream) []string { return []string{"scope", "selected", "ref", a.ids[1], "ref", a.ids[3]} }, 3, 2, "Moved 2 dead letters back"},
			{"redrive by reason", "redrive", func(a *actionStream) []string {
				return []string{"scope", "reason", "reason", completion.ReasonTaskNotFound}
			}, 2, 3, "Moved 3 dead letters back"},
			{"redrive all", "redrive", func(a *actionStream) []string { return []string{"scope", "all"} }, 0, 5, "Moved 5 dead letters back"},
			{"purge one", "purge", func(a *actionStream) []string { return []string{"one", a.ids[4]} }, 4, 0, "Deleted 1 dead letter"},
			{"purge selected", "purge", func(a *actionStream) []string { return []string{"scope", "selected", "ref", a.ids[0], "ref", a.ids[2]} }, 3, 0, "Deleted 2 dead letters"},
			{"purge all", "purge", func(a *actionStream) []string { return []string{"scope", "all"} }, 0, 0, "Deleted 5 dead letters"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := newActionStream(t, be)
				f := a.form(tc.form(a)...)
				code, page := a.b.post("/actions/"+tc.action, f)
				require.Equal(t, http.StatusOK, code, page)
				els := parseHTML(t, page)
				require.Len(t, find(els, "button", "id", "confirm"), 1, "a confirmation first")
				dead, entries := a.counts(t)
				require.Equal(t, [2]int64{5, 0}, [2]int64{dead, entries}, "nothing done before the confirmation")

				// Post the confirmation form as the page has it.
				confirm := url.Values{}
				for _, in := range find(els, "input", "type", "hidden") {
					confirm.Add(in.Attrs["name"], in.Attrs["value"])
				}
				assert.Equal(t, "yes", confirm.Get("confirm"))
				code, page = a.b.post("/actions/"+tc.action, confirm)
				require.Equal(t, http.StatusOK, code, page)
				assert.Contains(t, page, tc.says)
				dead, entries = a.counts(t)
				assert.Equal(t, [2]int64{tc.dead, tc.entries}, [2]int64{dead, entries})

				// Again: nothing left to move (or nothing more is deleted).
				code, page = a.b.post("/actions/"+tc.action, confirm)
				require.Equal(t, http.StatusOK, code, page)
				dead2, entries2 := a.counts(t)
				assert.Equal(t, [2]int64{min(dead, tc.dead), entries}, [2]int64{dead2, entries2}, "each dead letter moved once")
			})
		}
	})
}

func TestPublishAction(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		a := newActionStream(t, be)
		code, page := a.b.get("/publish?stream=" + url.QueryEscape(a.stream))
		require.Equal(t, http.StatusOK, code, page)
		f := a.form("op", "op-check", "task", "t-check", "success", "true", "result", `{"ok":1}`, "confirm", "yes")
		code, page = a.b.post("/actions/publish", f)
		require.Equal(t, http.StatusOK, code, page)
		assert.Contains(t, page, "Published entry")
		msgs, err := a.rdb.XRange(t.Context(), a.stream, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		assert.Equal(t, `{"operation_id":"op-check","task_id":"t-check","success":true,"result":{"ok":1},"error":null}`, msgs[0].Values["data"])

		code, page = a.b.post("/actions/publish", a.form("op", "op-x", "task", "t-x", "result", "not json"))
		assert.Equal(t, http.StatusBadRequest, code, page)
		code, page = a.b.post("/actions/publish", a.form("op", "", "task", "t-x"))
		assert.Equal(t, http.StatusBadRequest, code, page)
	})
}

// TestCSRF: a POST without the token, with another browser's token, with
// a forged one, or from another origin is refused, and changes nothing.
func TestCSRF(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		a := newActionStream(t, be)
		other := newActionStream(t, be) // another browser, another dashboard
		for _, tc := range []struct {
			name    string
			b       *browser
			form    url.Values
			headers []string
		}{
			{"no token", a.b, url.Values{"stream": {a.stream}, "scope": {"all"}, "confirm": {"yes"}}, nil},
			{"forged token", a.b, url.Values{"stream": {a.stream}, "scope": {"all"}, "confirm": {"yes"}, "csrf_token": {"AAAA"}}, nil},
			{"another browser's token", a.b, url.Values{"stream": {a.stream}, "scope": {"all"}, "confirm": {"yes"}, "csrf_token": {other.token}}, nil},
			{"foreign origin", a.b, a.form("scope", "all", "confirm", "yes"), []string{"Origin", "https://evil.example"}},
			{"cross-site fetch", a.b, a.form("scope", "all", "confirm", "yes"), []string{"Sec-Fetch-Site", "cross-site"}},
			{"no cookie", nil, nil, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := tc.b
				form := tc.form
				if tc.name == "no cookie" { // the token without the browser's cookie
					b = &browser{t: t, base: a.b.base, c: http.DefaultClient}
					form = a.form("scope", "all", "confirm", "yes")
				}
				code, page := b.post("/actions/purge", form, tc.headers...)
				assert.Equal(t, http.StatusForbidden, code, page)
				dead, _ := a.counts(t)
				assert.Equal(t, int64(5), dead, "nothing purged")
			})
		}
		// The same browser, same origin, with its token: accepted.
		code, page := a.b.post("/actions/purge", a.form("scope", "all", "confirm", "yes"), "Origin", a.b.base[:len(a.b.base)-len("/dash")])
		require.Equal(t, http.StatusOK, code, page)
		dead, _ := a.counts(t)
		assert.Zero(t, dead)
	})
}

// TestReadOnly: without Options.Actions no page offers an action and
// every POST is refused.
func TestReadOnly(t *testing.T) {
	redistest.EachBackend(t, func(t *testing.T, be redistest.Backend) {
		stream := uniqueStream(t, be.Client)
		id := deadLetter(t, be.Client, stream, completion.ReasonTaskNotFound, "task not found", "data", message(1))
		in := newInspector(t, be.Client, inspect.Config{Stream: stream, Group: "g"})
		h := newHandler(t, dashboard.Options{Streams: []*inspect.Inspector{in}})
		b := newBrowser(t, h, "/")
		for _, path := range []string{"/", "/dead?stream=" + url.QueryEscape(stream), "/deadletter?stream=" + url.QueryEscape(stream) + "&ref=" + id, "/pending", "/tail"} {
			code, page := b.get(path)
			require.Equal(t, http.StatusOK, code, "%s: %s", path, page)
			els := parseHTML(t, page)
			assert.Empty(t, find(els, "form", "method", "post"), path)
			assert.Empty(t, find(els, "input", "name", "csrf_token"), path)
			assert.NotContains(t, page, "Redrive", path)
			assert.NotContains(t, page, "Purge", path)
		}
		for _, action := range []string{"redrive", "purge", "publish"} {
			code, page := b.post("/actions/"+action, url.Values{"stream": {stream}, "scope": {"all"}, "confirm": {"yes"}})
			assert.Equal(t, http.StatusForbidden, code, page)
		}
		code, _ := b.get("/publish")
		assert.Equal(t, http.StatusForbidden, code)
		dl, ok, err := in.DeadLetter(t.Context(), id)
		require.NoError(t, err)
		assert.True(t, ok, "still there: %+v", dl)
	})
}
