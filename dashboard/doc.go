// Package dashboard is a web page for completion streams: an [http.Handler]
// that a program mounts in its own mux to look at its streams, their
// consumer groups, pending entries and dead letters, and, when the program
// allows it, to repair them.
//
//	in, err := inspect.New(rdb, inspect.Config{Stream: "chat:completions"})
//	dash, err := dashboard.New(dashboard.Options{
//		Streams: []*inspect.Inspector{in},
//		Prefix:  "/ops/completions/",
//	})
//	go dash.Run(ctx) // samples the chart; optional
//	mux.Handle("/ops/completions/", requireOperator(dash)) // your authentication
//
// # Pages
//
// The overview shows each stream (a partitioned one as one row, with a line
// per partition and the consumer that owns it): its length, each consumer
// group with its lag and pending count, each consumer with its pending
// count and idle time, the dead letters by reason, and a chart of lag,
// pending entries and dead letters over the last hour. The chart is drawn
// from samples the handler takes itself while [Handler.Run] runs; until
// then the page says there are none. Other pages list the pending entries
// (owner, idle time, deliveries) and the dead letters (with a reason
// filter and the error text), a page at a time (Options.PageSize), follow
// the stream live (Server-Sent Events from [inspect.Inspector.Tail]), and
// show one entry or dead letter whole: its fields, its decoded message and,
// with Options.Registry, the task it belongs to.
//
// # Actions
//
// The handler only reads unless Options.Actions is true. Then the dead
// letters page offers to redrive one, the selected, those of a reason or
// all dead letters, to purge one, the selected or all, and a form publishes
// a test completion. Each action first shows what it will do and asks for a
// confirmation; each moves each dead letter once, as the completion command
// does (see [inspect.Inspector.Redrive]). Every POST must carry the page's
// token, which is bound to a cookie the handler sets (an HMAC of the
// cookie's random value under Options.CSRFKey), and must come from the
// handler's own origin ([http.CrossOriginProtection]: the Origin or
// Sec-Fetch-Site header), so another site cannot make an operator's browser
// act.
//
// # Security
//
// Authentication and authorization are the host's job: the handler serves
// whoever reaches it. Mount it behind the program's own login, or on an
// address only operators reach. Everything read from Redis (field names and
// values, ids, error texts, results, consumer and group names) is shown as
// text, never as markup, with control characters escaped; lists cut long
// values, and only the detail pages show them whole. The pages load
// nothing from elsewhere (their CSS and JavaScript are embedded) and are
// served with a Content-Security-Policy that allows only the handler's own
// scripts.
//
// A Handler is safe for concurrent use.
package dashboard
