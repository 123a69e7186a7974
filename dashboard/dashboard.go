package dashboard

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// Defaults and limits of [Options].
const (
	// DefaultSampleInterval is how often [Handler.Run] samples the streams
	// for the chart when Options.SampleInterval is 0.
	DefaultSampleInterval = 10 * time.Second
	// MinSampleInterval is the shortest Options.SampleInterval accepted.
	MinSampleInterval = 100 * time.Millisecond
	// DefaultPageSize is how many pending entries or dead letters a page
	// lists when Options.PageSize is 0.
	DefaultPageSize = 50
	// MaxPageSize is the largest Options.PageSize accepted.
	MaxPageSize = 1000
	// ChartWindow is the time the chart covers, up to now.
	ChartWindow = time.Hour
	// MaxTails is how many live tails (Server-Sent Events streams) one
	// Handler serves at once; each holds a Redis connection in a blocking
	// read. More are refused with 503 Service Unavailable.
	MaxTails = 16
)

// ErrAlreadyRunning is returned by [Handler.Run] when another call of Run
// of the same Handler has not returned yet.
var ErrAlreadyRunning = errors.New("dashboard: Run is already running")

// Options configures a [Handler]. A zero field means its default, given at
// the end of each field's comment; [New] returns an error naming a field
// whose value it cannot use.
type Options struct {
	// Streams are the streams shown, one Inspector each (a partitioned
	// stream is one Inspector with inspect.Config.Partitions). At least
	// one; no two may inspect the same stream, since pages name a stream
	// by its name.
	Streams []*inspect.Inspector
	// Registry, when set, looks up the task an entry belongs to for the
	// entry and dead-letter detail pages. Default none: those pages show
	// the message without its task.
	Registry completion.TaskRegistry
	// Actions enables the actions: redrive and purge dead letters, publish
	// a test completion. Default false: the handler only reads, shows no
	// action and refuses every POST with 403 Forbidden.
	Actions bool
	// SampleInterval is how often [Handler.Run] samples each stream's lag,
	// pending entries and dead letters for the chart. At least
	// MinSampleInterval. Default DefaultSampleInterval.
	SampleInterval time.Duration
	// Prefix is the path the host mounts the handler under, starting and
	// ending with "/", e.g. "/ops/completions/" for
	// mux.Handle("/ops/completions/", h). The handler serves the requests
	// whose path starts with it (404 otherwise) and builds its links with
	// it. Default "/".
	Prefix string
	// PageSize is how many pending entries or dead letters a page lists.
	// At most MaxPageSize. Default DefaultPageSize.
	PageSize int
	// CSRFKey is the key of the tokens that protect the actions; at least
	// 32 bytes. Give every replica of a program the same key when a load
	// balancer spreads one operator's requests over them. Default: a
	// random key per Handler.
	CSRFKey []byte
	// Logger receives the errors of sampling and of requests, with the
	// keys stream and err. Default slog.Default().
	Logger *slog.Logger
}

// Handler serves the dashboard; see the package documentation. It is safe
// for concurrent use. Create it with [New].
type Handler struct {
	opts    Options
	streams []*stream
	byName  map[string]*stream
	root    http.Handler
	csrf    csrfKey
	cop     *http.CrossOriginProtection
	tails   chan struct{} // a slot per live tail
	running atomic.Bool

	now     func() time.Time // the clock; tests replace it
	sampled func()           // called after each round of samples; tests set it
}

// stream is one configured stream and its samples.
type stream struct {
	name    string
	in      *inspect.Inspector
	samples samples
}

// New returns a Handler of the streams opts names. It returns an error
// wrapping completion.ErrNilArgument when Streams holds a nil Inspector,
// and one wrapping completion.ErrInvalidConfig, naming the field, for any
// other value it cannot use.
func New(opts Options) (*Handler, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	h := &Handler{
		opts:   opts,
		byName: make(map[string]*stream, len(opts.Streams)),
		csrf:   csrfKey(opts.CSRFKey),
		cop:    http.NewCrossOriginProtection(),
		tails:  make(chan struct{}, MaxTails),
		now:    time.Now,
	}
	for i, in := range opts.Streams {
		if in == nil {
			return nil, fmt.Errorf("%w: dashboard.Options.Streams[%d] is nil", completion.ErrNilArgument, i)
		}
		name := in.Config().Stream
		if _, dup := h.byName[name]; dup {
			return nil, fmt.Errorf("%w: dashboard.Options.Streams[%d] inspects stream %q, as an earlier one does; give each stream once", completion.ErrInvalidConfig, i, name)
		}
		s := &stream{name: name, in: in}
		h.streams = append(h.streams, s)
		h.byName[name] = s
	}
	h.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusForbidden, errors.New("cross-origin request refused: the request did not come from this dashboard's pages"))
	}))
	h.root = http.StripPrefix(strings.TrimSuffix(opts.Prefix, "/"), h.routes())
	return h, nil
}

// fill checks opts and fills in the defaults.
func (o *Options) fill() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: dashboard.Options.%s", completion.ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case len(o.Streams) == 0:
		return invalid("Streams is empty; give at least one inspect.Inspector")
	case o.SampleInterval < 0 || o.SampleInterval > 0 && o.SampleInterval < MinSampleInterval:
		return invalid("SampleInterval is %v; want at least %v (0 means %v)", o.SampleInterval, MinSampleInterval, DefaultSampleInterval)
	case o.PageSize < 0 || o.PageSize > MaxPageSize:
		return invalid("PageSize is %d; want 1 to %d (0 means %d)", o.PageSize, MaxPageSize, DefaultPageSize)
	case o.CSRFKey != nil && len(o.CSRFKey) < 32:
		return invalid("CSRFKey has %d bytes; want at least 32 (nil means a random key)", len(o.CSRFKey))
	case o.Prefix != "" && (!strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/")):
		return invalid("Prefix is %q; it must start and end with \"/\", e.g. \"/ops/completions/\"", o.Prefix)
	case strings.ContainsAny(o.Prefix, "?#\"'<>\\ ") || strings.Contains(o.Prefix, "//"):
		return invalid("Prefix is %q; give a plain path such as \"/ops/completions/\"", o.Prefix)
	}
	o.Streams = append([]*inspect.Inspector(nil), o.Streams...)
	if o.SampleInterval == 0 {
		o.SampleInterval = DefaultSampleInterval
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.Prefix == "" {
		o.Prefix = "/"
	}
	if o.CSRFKey == nil {
		o.CSRFKey = make([]byte, 32)
		_, _ = rand.Read(o.CSRFKey) // crypto/rand.Read never fails
	} else {
		o.CSRFKey = append([]byte(nil), o.CSRFKey...)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// ServeHTTP serves the dashboard's pages, assets, live tail and actions
// under Options.Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, h.opts.Prefix) {
		h.fail(w, r, http.StatusNotFound, fmt.Errorf("no page here: the dashboard is under %s", h.opts.Prefix))
		return
	}
	h.root.ServeHTTP(w, r)
}

// routes returns the handler's routes, below the prefix.
func (h *Handler) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /pending", h.pending)
	mux.HandleFunc("GET /dead", h.deadLetters)
	mux.HandleFunc("GET /deadletter", h.deadLetter)
	mux.HandleFunc("GET /entry", h.entry)
	mux.HandleFunc("GET /publish", h.publishForm)
	mux.HandleFunc("GET /tail", h.tailPage)
	mux.HandleFunc("GET /tail/events", h.tailEvents)
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticFiles()))
	mux.Handle("POST /actions/{action}", h.cop.Handler(http.HandlerFunc(h.action)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, errors.New("no such page"))
	})
	return mux
}

// streamOf returns the stream a request names in its "stream" parameter,
// the first stream when it names none.
func (h *Handler) streamOf(r *http.Request) (*stream, error) {
	name := r.FormValue("stream")
	if name == "" {
		return h.streams[0], nil
	}
	s, ok := h.byName[name]
	if !ok {
		return nil, fmt.Errorf("this dashboard shows no stream %q", name)
	}
	return s, nil
}
