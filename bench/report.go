package main

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// machine describes where the figures were taken.
type machine struct {
	cpus                             int
	goVer, goarch, redis, host, addr string
	date                             string
	load, loadEnd                    string // 1-minute load average at the start and the end
}

// row is the median figure of one implementation in one mode.
type row struct {
	impl        string
	mode        string
	concurrency int
	msgs        int // memory mode: the backlog drained
	m           measure
	// rounds are the runs' figures, in the order they ran: round i of
	// every implementation ran back to back.
	rounds []measure
}

// ratio compares r with base on one metric: the median, over the rounds,
// of r's figure against base's in the same round. The rounds ran next to
// each other, so a slow spell of the machine moves both figures of a pair
// and cancels out, where a ratio of the two medians keeps it.
func (r row) ratio(base row, f func(measure) float64) float64 {
	n := min(len(r.rounds), len(base.rounds))
	var v []float64
	for i := range n {
		if b := f(base.rounds[i]); b > 0 {
			v = append(v, f(r.rounds[i])/b)
		}
	}
	if len(v) == 0 {
		if b := f(base.m); b > 0 {
			return f(r.m) / b
		}
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// The metrics ratio compares.
func msgsPerS(m measure) float64     { return m.msgsPerS }
func cpuPerMsg(m measure) float64    { return m.cpuUSPerMsg }
func allocsPerMsg(m measure) float64 { return m.allocsPerMsg }

func (r row) label() string {
	if r.impl == "completion" {
		return fmt.Sprintf("completion c=%d", r.concurrency)
	}
	return r.impl
}

type report struct {
	machine machine
	opts    options
	rows    []row
}

func (rep report) print(w io.Writer) {
	for _, r := range rep.rows {
		if r.mode == modeMemory {
			fmt.Fprintf(w, "RESULT impl=%s mode=%s concurrency=%d msgs=%d baseline_rss_mb=%.1f peak_rss_mb=%.1f end_rss_mb=%.1f heap_inuse_mb=%.1f\n",
				r.impl, r.mode, r.concurrency, r.msgs, r.m.baselineMB, r.m.peakMB, r.m.endMB, r.m.heapMB)
			continue
		}
		fmt.Fprintf(w, "RESULT impl=%s mode=%s concurrency=%d msgs_per_s=%.0f cpu_us_per_msg=%.2f gc_us_per_msg=%.2f allocs_per_msg=%.2f bytes_per_msg=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
			r.impl, r.mode, r.concurrency, r.m.msgsPerS, r.m.cpuUSPerMsg, r.m.gcUSPerMsg, r.m.allocsPerMsg, r.m.bytesPerMsg, r.m.p50ms, r.m.p99ms, r.m.maxms)
	}
	for _, section := range []string{rep.table(), rep.memoryTable(), rep.ratios(), rep.targets()} {
		if section != "" {
			fmt.Fprintln(w)
			fmt.Fprint(w, section)
		}
	}
}

func (rep report) settings() string {
	o := rep.opts
	var parts []string
	if o.wantMode(modeThroughput) {
		parts = append(parts, fmt.Sprintf("throughput backlog %d", o.n))
	}
	if o.wantMode(modeLatency) {
		parts = append(parts, fmt.Sprintf("latency %d msgs/s for %v", o.rate, o.duration))
	}
	if o.wantMode(modeSlowHandler) {
		parts = append(parts, fmt.Sprintf("slow handler %v with backlog %d", o.slowDelay, max(1, o.n/10)))
	}
	if o.wantMode(modeMemory) {
		parts = append(parts, fmt.Sprintf("memory backlogs %s (%d tasks used cyclically, RSS sampled every %v)", o.memN, memTasks, rssEvery))
	}
	parts = append(parts, fmt.Sprintf("median of %d run(s)", o.runs))
	return strings.Join(parts, "; ")
}

// table is the markdown table of every row but the memory mode's; empty
// when there are none.
func (rep report) table() string {
	var b strings.Builder
	b.WriteString("| impl | mode | concurrency | msgs/s | CPU µs/msg | of it GC | allocs/msg | bytes/msg | p50 ms | p99 ms | max ms |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	n := 0
	for _, r := range rep.rows {
		if r.mode == modeMemory {
			continue
		}
		n++
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.impl, r.mode, r.concurrency,
			num(r.m.msgsPerS, "%.0f"), num(r.m.cpuUSPerMsg, "%.2f"), num(r.m.gcUSPerMsg, "%.2f"), num(r.m.allocsPerMsg, "%.1f"), num(r.m.bytesPerMsg, "%.0f"),
			num(r.m.p50ms, "%.3f"), num(r.m.p99ms, "%.3f"), num(r.m.maxms, "%.3f"))
	}
	if n == 0 {
		return ""
	}
	return b.String()
}

// memoryTable is the markdown table of the memory mode's rows, with the
// growth of the peak over the baseline; empty when there are none.
func (rep report) memoryTable() string {
	var b strings.Builder
	b.WriteString("Memory: RSS of the whole benchmark process (MiB) while draining a backlog of n messages\n")
	b.WriteString("(baseline after runtime.GC and debug.FreeOSMemory, before the drain; Go heap in use at the peak sample):\n\n")
	b.WriteString("| impl | concurrency | n | baseline RSS | peak RSS | peak − baseline | end RSS | heap in use at peak |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	n := 0
	for _, r := range rep.rows {
		if r.mode != modeMemory {
			continue
		}
		n++
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.impl, r.concurrency, r.msgs,
			r.m.baselineMB, r.m.peakMB, r.m.peakMB-r.m.baselineMB, r.m.endMB, r.m.heapMB)
	}
	if n == 0 {
		return ""
	}
	return b.String()
}

// num formats v, or "–" for a metric that does not apply.
func num(v float64, format string) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func (rep report) find(impl, mode string, concurrency int) (row, bool) {
	for _, r := range rep.rows {
		if r.impl == impl && r.mode == mode && (concurrency == 0 || r.concurrency == concurrency) {
			return r, true
		}
	}
	return row{}, false
}

// ratios compares each completion throughput row with the peers.
func (rep report) ratios() string {
	if _, ok := rep.find("completion", modeThroughput, 0); !ok {
		return ""
	}
	var b strings.Builder
	b.WriteString("Throughput of completion relative to the peers (higher is better), and its CPU and allocations per message against the bare loop's (lower is better); each the median of the per-round ratios:\n\n")
	b.WriteString("| completion | vs python-loop | vs watermill | vs bare-go-redis | CPU/msg vs bare-go-redis | allocs/msg vs bare-go-redis |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.rows {
		if !strings.HasPrefix(r.impl, "completion") || r.mode != modeThroughput {
			continue
		}
		name := ""
		if r.impl != "completion" {
			name = r.impl + " "
		}
		fmt.Fprintf(&b, "| %sconcurrency=%d |", name, r.concurrency)
		for _, peer := range []string{"python-loop", "watermill", "bare-go-redis"} {
			p, ok := rep.find(peer, modeThroughput, 0)
			if !ok || p.m.msgsPerS == 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(&b, " %.2fx |", r.ratio(p, msgsPerS))
		}
		if p, ok := rep.find("bare-go-redis", modeThroughput, 0); ok && p.m.allocsPerMsg > 0 && p.m.cpuUSPerMsg > 0 {
			fmt.Fprintf(&b, " %.2fx | %.2fx |\n", r.ratio(p, cpuPerMsg), r.ratio(p, allocsPerMsg))
		} else {
			b.WriteString(" – | – |\n")
		}
	}
	return b.String()
}

// targets checks the library's goals, on the completion consumer at its
// default concurrency (the slow-handler goal at concurrency 64).
func (rep report) targets() string {
	type goal struct {
		what      string
		got, want float64
		atLeast   bool
		unit      string
	}
	var goals []goal
	def := 16
	if c, ok := rep.find("completion", modeThroughput, def); ok {
		for _, g := range []struct {
			peer string
			want float64
		}{{"python-loop", 12}, {"watermill", 15}, {"bare-go-redis", 1}} {
			if p, ok := rep.find(g.peer, modeThroughput, 0); ok && p.m.msgsPerS > 0 {
				goals = append(goals, goal{"throughput vs " + g.peer, c.ratio(p, msgsPerS), g.want, true, "x"})
			}
		}
		if p, ok := rep.find("bare-go-redis", modeThroughput, 0); ok && p.m.cpuUSPerMsg > 0 && p.m.allocsPerMsg > 0 {
			goals = append(goals,
				goal{"CPU/msg vs bare-go-redis", c.ratio(p, cpuPerMsg), 1.1, false, "x"},
				goal{"allocs/msg vs bare-go-redis", c.ratio(p, allocsPerMsg), 1, false, "x"})
		}
	}
	if c, ok := rep.find("completion", modeLatency, def); ok {
		goals = append(goals, goal{fmt.Sprintf("latency p99 at %d msgs/s", rep.opts.rate), c.m.p99ms, 1, false, " ms"})
	}
	if c, ok := rep.find("completion", modeSlowHandler, 64); ok {
		goals = append(goals, goal{fmt.Sprintf("%v handler, concurrency 64, msgs/s", rep.opts.slowDelay), c.m.msgsPerS, 40000, true, ""})
	}
	if len(goals) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Targets (completion at concurrency %d unless said):\n\n", def)
	b.WriteString("| target | got | want | status |\n|---|---:|---:|---|\n")
	for _, g := range goals {
		status := "met"
		if g.atLeast && g.got < g.want {
			status = fmt.Sprintf("missed: %.2fx short", g.want/g.got)
		} else if !g.atLeast && g.got > g.want {
			status = fmt.Sprintf("missed: %.2fx over", g.got/g.want)
		}
		op := ">="
		if !g.atLeast {
			op = "<="
		}
		fmt.Fprintf(&b, "| %s | %s%s | %s %s%s | %s |\n", g.what, trim(g.got), g.unit, op, trim(g.want), g.unit, status)
	}
	return b.String()
}

func trim(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// markdown is results.md: the machine, the settings and the tables.
func (rep report) markdown() string {
	m := rep.machine
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	fmt.Fprintf(&b, "- date: %s\n", m.date)
	fmt.Fprintf(&b, "- machine: %s, %d CPUs (nproc), %s\n", m.host, m.cpus, m.goarch)
	fmt.Fprintf(&b, "- Go: %s\n", m.goVer)
	fmt.Fprintf(&b, "- redis-server: %s (from INFO), at %s\n", m.redis, m.addr)
	if m.load != "" {
		fmt.Fprintf(&b, "- load average (1 min): %s at the start, %s at the end (other work on the machine skews the figures)\n", m.load, m.loadEnd)
	}
	fmt.Fprintf(&b, "- settings: %s\n", rep.settings())
	for _, section := range []string{rep.table(), rep.memoryTable(), rep.ratios(), rep.targets()} {
		if section != "" {
			b.WriteString("\n")
			b.WriteString(section)
		}
	}
	b.WriteString("\nProduced by `cd bench && go run .`; see README.md.\n")
	return b.String()
}

// svg is a horizontal bar chart of throughput msgs/s per implementation.
func (rep report) svg() string {
	var bars []row
	top := 0.0
	for _, r := range rep.rows {
		if r.mode == modeThroughput {
			bars = append(bars, r)
			top = max(top, r.m.msgsPerS)
		}
	}
	const (
		width, left, right, barH, gap, head = 760, 170, 110, 26, 12, 56
	)
	height := head + len(bars)*(barH+gap) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">Throughput draining %d messages (msgs/s, higher is better)</text>`+"\n", left/8, rep.opts.n)
	fmt.Fprintf(&b, `<text x="%d" y="42" fill="#555">%s</text>`+"\n", left/8,
		html.EscapeString(fmt.Sprintf("%d CPUs, %s, redis %s, median of %d, %s", rep.machine.cpus, rep.machine.goVer, rep.machine.redis, rep.opts.runs, rep.machine.date)))
	span := float64(width - left - right)
	for i, r := range bars {
		y := head + i*(barH+gap)
		w := 0.0
		if top > 0 {
			w = r.m.msgsPerS / top * span
		}
		color := "#9aa5b1"
		if r.impl == "completion" {
			color = "#2f6fd0"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH/2+5, html.EscapeString(r.label()))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, max(w, 1), barH, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.0f</text>`+"\n", float64(left)+max(w, 1)+6, y+barH/2+5, r.m.msgsPerS)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, head-4, left, head+len(bars)*(barH+gap)-gap+4)
	b.WriteString("</svg>\n")
	return b.String()
}
