package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/streamrelay/completion/internal/safetext"
)

//go:embed templates static
var assets embed.FS

// listCut is the most bytes of one value a list shows; the detail pages
// show values whole.
const listCut = 120

// pages are the parsed templates, by page name: each is the layout with
// the page's "content".
var pages = parsePages("overview", "pending", "dead", "deadletter", "entry", "tail", "publish", "confirm", "result", "error")

func parsePages(names ...string) map[string]*template.Template {
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/parts.html"))
	out := make(map[string]*template.Template, len(names))
	for _, n := range names {
		out[n] = template.Must(template.Must(base.Clone()).ParseFS(assets, "templates/"+n+".html"))
	}
	return out
}

// funcs are the templates' helpers. Every text that came from Redis goes
// through t, cut or lines, which escape control characters (html/template
// then escapes markup).
var funcs = template.FuncMap{
	"t":      safetext.Escape,
	"cut":    func(s string) string { return safetext.Cap(s, listCut) },
	"lines":  lines,
	"dur":    duration,
	"clock":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"plural": func(n int, one, many string) string { return plural(int64(n), one, many) },
}

// lines escapes s for a <pre>: its lines kept, every other control
// character escaped.
func lines(s string) string {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		ls[i] = safetext.Escape(l)
	}
	return strings.Join(ls, "\n")
}

// pretty returns JSON text indented, or as it is when it is no JSON.
func pretty(raw []byte) string {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return string(raw)
	}
	return b.String()
}

// duration formats d shortly: 340ms, 4.2s, 3m12s.
func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// page is what the layout shows around every page's content.
type page struct {
	Title   string
	Prefix  string
	Streams []string
	Stream  string // the stream the page is about
	Actions bool
	Token   string // the action token, with Actions
	Data    any
}

// Link returns the URL of the dashboard page path with the parameters
// given as name, value pairs (empty values left out).
func (p page) Link(path string, kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Add(kv[i], kv[i+1])
		}
	}
	u := p.Prefix + path
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}

// render writes page name with data, about stream s (nil: none).
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title string, s *stream, data any) {
	p := page{Title: title, Prefix: h.opts.Prefix, Actions: h.opts.Actions, Data: data}
	for _, x := range h.streams {
		p.Streams = append(p.Streams, x.name)
	}
	if s != nil {
		p.Stream = s.name
	}
	if h.opts.Actions {
		p.Token = h.token(w, r)
	}
	var b bytes.Buffer
	if err := pages[name].Execute(&b, p); err != nil {
		h.opts.Logger.Error("dashboard: render page", "page", name, "err", err)
		http.Error(w, "dashboard: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// fail writes an error page.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	if status >= 500 {
		h.opts.Logger.Warn("dashboard: request failed", "path", r.URL.Path, "err", err)
	}
	h.render(w, r, status, "error", http.StatusText(status), nil, err.Error())
}

// staticFiles serves the embedded CSS and JavaScript.
func staticFiles() http.Handler {
	sub, _ := fs.Sub(assets, "static")
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}
