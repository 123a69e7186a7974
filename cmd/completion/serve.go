package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/safetext"
)

// serveShutdown bounds how long serve waits for requests to finish once
// interrupted.
const serveShutdown = 5 * time.Second

var serveCommand = &command{
	name:    "serve",
	usage:   "[-listen ADDR] [-write] [-sample D]",
	summary: "serve the web dashboard of the stream until Ctrl-C (read-only unless -write)",
	about: `Serves the dashboard (package dashboard) of the stream on -listen and prints
its URL: the stream, its groups and consumers, a chart of lag, pending
entries and dead letters over the last hour (sampled every -sample), the
pending entries, the dead letters by reason, each entry and dead letter in
full, and a live tail. -addr is the Redis address, as for the other
commands; -timeout does not apply: stop it with Ctrl-C.

Without -write it only reads: it shows no action and refuses every POST.
With -write the dead letters page can redrive and purge dead letters (one,
the selected, by reason, all) and publish a test completion, each after a
confirmation. The dashboard has no login: anyone who reaches -listen sees it
(and with -write can act), so keep the default loopback address, or put it
behind a proxy that authenticates. With -partitions N it shows the N
partitions as one stream.`,
	example: "completion serve -listen 127.0.0.1:8080\ncompletion -stream chat:completions -partitions 6 serve -write",
	endless: true,
	setup: func(fs *flag.FlagSet) func([]string) (action, error) {
		listen := fs.String("listen", "127.0.0.1:8080", "serve on this `address` (host:port; port 0 picks a free one)")
		write := fs.Bool("write", false, "enable the actions: redrive, purge, publish")
		sample := fs.Duration("sample", dashboard.DefaultSampleInterval, "sample the chart every `duration`")
		return func(args []string) (action, error) {
			switch {
			case len(args) > 0:
				return nil, usagef("serve takes no arguments, got %q", args)
			case *listen == "":
				return nil, usagef("-listen is empty; give host:port, e.g. 127.0.0.1:8080")
			case *sample < dashboard.MinSampleInterval:
				return nil, usagef("-sample is %v; want at least %v", *sample, dashboard.MinSampleInterval)
			}
			return func(ctx context.Context, e *env) error {
				return serve(ctx, e, *listen, *write, *sample)
			}, nil
		}
	},
}

// serve runs the dashboard on listen until ctx ends.
func serve(ctx context.Context, e *env, listen string, write bool, sample time.Duration) error {
	dash, err := dashboard.New(dashboard.Options{
		Streams:        []*inspect.Inspector{e.in},
		Actions:        write,
		SampleInterval: sample,
		Logger:         slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return usagef("-listen %q: %v", listen, err)
	}
	mode := "read-only; -write enables redrive, purge and publish"
	if write {
		mode = "actions enabled: redrive, purge, publish"
	}
	fmt.Fprintf(e.stdout, "Dashboard of %s at http://%s/ (%s). Ctrl-C to stop.\n", safetext.Escape(e.g.stream), ln.Addr(), mode)
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(e.stderr, "completion serve: the dashboard has no login, and %s is not a loopback address: anyone who reaches it sees the stream%s\n",
			ln.Addr(), map[bool]string{true: " and can act on it", false: ""}[write])
	}
	srv := &http.Server{
		Handler:           dash,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx }, // interrupting ends the live tails
	}
	sampling, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = dash.Run(sampling) })
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), serveShutdown)
		err = srv.Shutdown(sctx)
		cancel()
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	stopSampling()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
