package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/dashboard"
	"github.com/streamrelay/completion/inspect"
)

// A program mounts the dashboard under a prefix of its own mux, behind
// its own authentication, and runs its sampler for the chart. Without
// Options.Actions it only reads: a POST is refused.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := completion.Publish(ctx, rdb, "chat:completions", completion.Message{OperationID: "op-1", TaskID: "t-1", Success: true}); err != nil {
		panic(err)
	}

	in, err := inspect.New(rdb, inspect.Config{Stream: "chat:completions"})
	if err != nil {
		panic(err)
	}
	dash, err := dashboard.New(dashboard.Options{
		Streams: []*inspect.Inspector{in},
		Prefix:  "/ops/completions/",
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	sampled := make(chan error, 1)
	go func() { sampled <- dash.Run(ctx) }()

	mux := http.NewServeMux()
	mux.Handle("/ops/completions/", requireOperator(dash))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/ops/completions/")
	if err != nil {
		panic(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.Status, res.Header.Get("Content-Type"))
	fmt.Println(strings.Contains(string(page), "chat:completions"))

	res, err = http.PostForm(srv.URL+"/ops/completions/actions/purge", url.Values{"scope": {"all"}, "confirm": {"yes"}})
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.Status)

	cancel()
	fmt.Println(<-sampled)
	// Output:
	// 200 OK text/html; charset=utf-8
	// true
	// 403 Forbidden
	// <nil>
}

// requireOperator stands for the program's own authentication.
func requireOperator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// e.g. check a session cookie or a client certificate here.
		next.ServeHTTP(w, r)
	})
}
