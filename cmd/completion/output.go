package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/safetext"
)

// print writes v as JSON under -json, or calls table otherwise.
func (e *env) print(v any, table func() error) error {
	if e.g.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return table()
}

func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// ---------------------------------------------------------------------------
// JSON views: the -json output is a contract of its own, so it is spelled
// out here rather than derived from the library's types. Durations are
// milliseconds, times RFC 3339. With -partitions the views gain what says
// which partition a thing is in; without, they are as they always were.

type infoJSON struct {
	Stream           string      `json:"stream"`
	Exists           bool        `json:"exists"`
	Length           int64       `json:"length"`
	FirstID          string      `json:"first_id"`
	LastID           string      `json:"last_id"`
	DeadLetterStream string      `json:"dead_letter_stream"`
	DeadLetterLength int64       `json:"dead_letter_length"`
	Groups           []groupJSON `json:"groups"`
	// Partitions, with -partitions: each partition's state; the fields
	// above are then totals (dead_letter_stream is "" unless the
	// partitions share one).
	Partitions []partitionJSON `json:"partitions,omitempty"`
}

// partitionJSON is one partition's state: its index and its infoJSON
// (with the partition's key as stream).
type partitionJSON struct {
	Index int `json:"index"`
	// Owner is the consumer of the group that owns the partition, "" when
	// none does.
	Owner string `json:"owner"`
	infoJSON
}

type groupJSON struct {
	Name            string         `json:"name"`
	Pending         int64          `json:"pending"`
	Lag             *int64         `json:"lag"` // null: Redis cannot tell
	LastDeliveredID string         `json:"last_delivered_id"`
	Consumers       []consumerJSON `json:"consumers"`
}

type consumerJSON struct {
	Name    string `json:"name"`
	Pending int64  `json:"pending"`
	IdleMS  int64  `json:"idle_ms"`
}

func infoView(si inspect.StreamInfo) infoJSON {
	v := streamView(si)
	for i, p := range si.Partitions {
		v.Partitions = append(v.Partitions, partitionJSON{Index: i, Owner: p.Owner, infoJSON: streamView(p)})
	}
	return v
}

func streamView(si inspect.StreamInfo) infoJSON {
	v := infoJSON{
		Stream: si.Stream, Exists: si.Exists, Length: si.Length, FirstID: si.FirstID, LastID: si.LastID,
		DeadLetterStream: si.DeadLetterStream, DeadLetterLength: si.DeadLetterLength,
		Groups: []groupJSON{},
	}
	for _, g := range si.Groups {
		gj := groupJSON{Name: g.Name, Pending: g.Pending, LastDeliveredID: g.LastDeliveredID, Consumers: []consumerJSON{}}
		if g.LagKnown {
			lag := g.Lag
			gj.Lag = &lag
		}
		for _, c := range g.Consumers {
			gj.Consumers = append(gj.Consumers, consumerJSON{Name: c.Name, Pending: c.Pending, IdleMS: c.Idle.Milliseconds()})
		}
		v.Groups = append(v.Groups, gj)
	}
	return v
}

type pendingJSON struct {
	ID         string `json:"id"`
	Consumer   string `json:"consumer"`
	IdleMS     int64  `json:"idle_ms"`
	Deliveries int64  `json:"deliveries"`
	// With -partitions: the partition's index and key.
	Partition *int   `json:"partition,omitempty"`
	Stream    string `json:"stream,omitempty"`
}

func pendingView(entries []inspect.PendingEntry, partitioned bool) []pendingJSON {
	v := make([]pendingJSON, 0, len(entries))
	for _, p := range entries {
		pj := pendingJSON{ID: p.ID, Consumer: p.Consumer, IdleMS: p.Idle.Milliseconds(), Deliveries: p.Deliveries}
		if partitioned {
			pj.Partition, pj.Stream = &p.Partition, p.Stream
		}
		v = append(v, pj)
	}
	return v
}

type deadJSON struct {
	ID          string            `json:"id"`
	Reason      string            `json:"reason"`
	Error       string            `json:"error"`
	Deliveries  int64             `json:"deliveries"`
	Consumer    string            `json:"consumer"`
	Group       string            `json:"group"`
	Stream      string            `json:"stream"`
	SourceID    string            `json:"source_id"`
	Time        *time.Time        `json:"time"`
	Message     json.RawMessage   `json:"message"` // the wire form; null when undecodable
	DecodeError string            `json:"decode_error,omitempty"`
	Fields      map[string]string `json:"fields"`
	// With -partitions: what redrive and purge take (PARTITION/ID), the
	// partition's index (where a redrive puts it) and the dead-letter
	// stream that holds it.
	Ref              string `json:"ref,omitempty"`
	Partition        *int   `json:"partition,omitempty"`
	DeadLetterStream string `json:"dead_letter_stream,omitempty"`
}

func deadView(dls []inspect.DeadLetter, partitioned bool) []deadJSON {
	v := make([]deadJSON, 0, len(dls))
	for _, dl := range dls {
		d := deadJSON{
			ID: dl.ID, Reason: dl.Reason, Error: dl.Error, Deliveries: dl.Deliveries,
			Consumer: dl.Consumer, Group: dl.Group, Stream: dl.Stream, SourceID: dl.SourceID,
			Message: messageJSON(dl.Message), DecodeError: errString(dl.DecodeErr), Fields: dl.Fields,
		}
		if !dl.Time.IsZero() {
			t := dl.Time.UTC()
			d.Time = &t
		}
		if partitioned {
			d.Ref, d.Partition, d.DeadLetterStream = dl.Ref, &dl.Partition, dl.DeadLetterStream
		}
		v = append(v, d)
	}
	return v
}

type entryJSON struct {
	ID          string            `json:"id"`
	Message     json.RawMessage   `json:"message"`
	DecodeError string            `json:"decode_error,omitempty"`
	Fields      map[string]string `json:"fields"`
	// With -partitions: the partition's index and key.
	Partition *int   `json:"partition,omitempty"`
	Stream    string `json:"stream,omitempty"`
}

func entryView(e inspect.Entry, partitioned bool) entryJSON {
	v := entryJSON{ID: e.ID, Message: messageJSON(e.Message), DecodeError: errString(e.DecodeErr), Fields: e.Fields}
	if partitioned {
		v.Partition, v.Stream = &e.Partition, e.Stream
	}
	return v
}

type countView struct {
	Redriven   *int   `json:"redriven,omitempty"`
	Purged     *int   `json:"purged,omitempty"`
	Stream     string `json:"stream"`
	Partitions int    `json:"partitions,omitempty"` // with -partitions
}

type publishedView struct {
	ID         string `json:"id"`
	Stream     string `json:"stream"`               // the partition's key, with -partitions
	Partition  *int   `json:"partition,omitempty"`  // with -partitions
	Partitions int    `json:"partitions,omitempty"` // with -partitions
}

// messageJSON returns m in its wire form, or JSON null.
func messageJSON(m *completion.Message) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	b, err := m.MarshalJSON()
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---------------------------------------------------------------------------
// Tables

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeStreamHeader prints the stream's own lines of info.
func writeStreamHeader(w io.Writer, si inspect.StreamInfo) error {
	tw := newTable(w)
	now := time.Now()
	parts := ""
	if n := len(si.Partitions); n > 0 {
		parts = fmt.Sprintf(" (%d partitions)", n)
	}
	if si.Exists {
		fmt.Fprintf(tw, "Stream\t%s%s\n", text(si.Stream), parts)
	} else {
		fmt.Fprintf(tw, "Stream\t%s%s (does not exist)\n", text(si.Stream), parts)
	}
	fmt.Fprintf(tw, "Entries\t%d\n", si.Length)
	if si.FirstID != "" {
		fmt.Fprintf(tw, "First entry\t%s%s\n", si.FirstID, idAge(si.FirstID, now))
		fmt.Fprintf(tw, "Last entry\t%s%s\n", si.LastID, idAge(si.LastID, now))
	}
	switch {
	case si.Partitions == nil:
		fmt.Fprintf(tw, "Dead letters\t%d in %s\n", si.DeadLetterLength, text(si.DeadLetterStream))
	case si.DeadLetterStream != "":
		fmt.Fprintf(tw, "Dead letters\t%d in %s (shared by the partitions)\n", si.DeadLetterLength, text(si.DeadLetterStream))
	default:
		fmt.Fprintf(tw, "Dead letters\t%d in the partitions' dead-letter streams\n", si.DeadLetterLength)
	}
	return tw.Flush()
}

// writeInfo prints the stream's state; of a partitioned stream the totals,
// then a line per partition with the pending count and lag of group.
func writeInfo(w io.Writer, si inspect.StreamInfo, group string) error {
	if err := writeStreamHeader(w, si); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(si.Groups) == 0 {
		if _, err := fmt.Fprintln(w, "No consumer groups."); err != nil {
			return err
		}
		return writePartitions(w, si, group)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "GROUP\tCONSUMERS\tPENDING\tLAG\tLAST DELIVERED")
	for _, g := range si.Groups {
		lag := "?"
		if g.LagKnown {
			lag = strconv.FormatInt(g.Lag, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", text(g.Name), len(g.Consumers), g.Pending, lag, text(g.LastDeliveredID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "GROUP\tCONSUMER\tPENDING\tIDLE")
	for _, g := range si.Groups {
		if len(g.Consumers) == 0 {
			fmt.Fprintf(tw, "%s\t(none)\t\t\n", text(g.Name))
		}
		for _, c := range g.Consumers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", text(g.Name), text(c.Name), c.Pending, duration(c.Idle))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writePartitions(w, si, group)
}

// writePartitions prints a line per partition of a partitioned stream, and
// the totals: its owner in the group ("-" when none), entries, group's pending count and lag ("-" where the
// partition has no such group, "?" where Redis cannot tell the lag), and
// dead letters (left out when the partitions share a dead-letter stream).
func writePartitions(w io.Writer, si inspect.StreamInfo, group string) error {
	if si.Partitions == nil {
		return nil
	}
	shared := si.DeadLetterStream != ""
	fmt.Fprintf(w, "\nPartitions (pending and lag of group %s):\n", text(group))
	tw := newTable(w)
	if shared {
		fmt.Fprintln(tw, "PARTITION\tSTREAM\tOWNER\tENTRIES\tPENDING\tLAG")
	} else {
		fmt.Fprintln(tw, "PARTITION\tSTREAM\tOWNER\tENTRIES\tPENDING\tLAG\tDEAD LETTERS")
	}
	row := func(name, key, owner string, length int64, g inspect.GroupInfo, ok bool, dead int64) {
		pending, lag := "-", "-"
		if ok {
			pending, lag = strconv.FormatInt(g.Pending, 10), "?"
			if g.LagKnown {
				lag = strconv.FormatInt(g.Lag, 10)
			}
		}
		if shared {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", name, key, owner, length, pending, lag)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\n", name, key, owner, length, pending, lag, dead)
		}
	}
	for i, p := range si.Partitions {
		key := text(p.Stream)
		if !p.Exists {
			key += " (does not exist)"
		}
		g, ok := p.Group(group)
		owner := text(p.Owner)
		if owner == "" {
			owner = "-"
		}
		row(strconv.Itoa(i), key, owner, p.Length, g, ok, p.DeadLetterLength)
	}
	g, ok := si.Group(group)
	row("TOTAL", "", "", si.Length, g, ok, si.DeadLetterLength)
	return tw.Flush()
}

// writePending prints pending entries; of a partitioned stream named
// PARTITION/ID.
func writePending(w io.Writer, group string, entries []inspect.PendingEntry, count int, partitioned bool) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintf(w, "No pending entries in group %s.\n", text(group))
		return err
	}
	tw := newTable(w)
	if partitioned {
		fmt.Fprintln(tw, "PARTITION/ID\tCONSUMER\tIDLE\tDELIVERIES")
	} else {
		fmt.Fprintln(tw, "ID\tCONSUMER\tIDLE\tDELIVERIES")
	}
	for _, p := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", text(p.Ref), text(p.Consumer), duration(p.Idle), p.Deliveries)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(entries) == count {
		_, err := fmt.Fprintf(w, "(the oldest %d; -count shows more)\n", count)
		return err
	}
	return nil
}

// writeDead prints a page of dead letters; of a partitioned stream named
// PARTITION/ID, as redrive and purge take them.
func writeDead(w io.Writer, page inspect.DeadLetterPage, reason string, partitioned bool) error {
	dls := page.DeadLetters
	if len(dls) == 0 && page.Next == "" {
		if reason != "" {
			_, err := fmt.Fprintf(w, "No dead letters of reason %s.\n", safetext.Escape(reason))
			return err
		}
		_, err := fmt.Fprintln(w, "No dead letters.")
		return err
	}
	tw := newTable(w)
	if partitioned {
		fmt.Fprintln(tw, "PARTITION/ID\tDEAD-LETTERED\tREASON\tDELIVERIES\tSOURCE ID\tOPERATION\tTASK\tERROR")
	} else {
		fmt.Fprintln(tw, "ID\tDEAD-LETTERED\tREASON\tDELIVERIES\tSOURCE ID\tOPERATION\tTASK\tERROR")
	}
	for _, dl := range dls {
		when := "-"
		if !dl.Time.IsZero() {
			when = dl.Time.UTC().Format("2006-01-02 15:04:05")
		}
		op, task := "-", "-"
		if dl.Message != nil {
			op, task = dl.Message.OperationID, dl.Message.TaskID
		}
		errText := dl.Error
		if !dl.Redrivable() && dl.Excerpt != "" {
			errText = fmt.Sprintf("%s [%d bytes, %d fields; cannot be redriven]", errText, dl.Size, dl.FieldCount)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", cell(dl.Ref, 40), when, cell(dl.Reason, 20), dl.Deliveries, cell(dl.SourceID, 40),
			cell(op, 24), cell(task, 24), cell(errText, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		more := "completion dead -start '" + page.Next + "'"
		if reason != "" {
			more += " -reason " + reason
		}
		_, err := fmt.Fprintf(w, "More may follow: %s\n", safetext.Escape(more))
		return err
	}
	return nil
}

// writeEntry prints one tailed entry on one line; of a partitioned stream
// named PARTITION/ID.
func writeEntry(w io.Writer, e inspect.Entry, partitioned bool) error {
	id := text(e.Ref)
	if e.Message == nil {
		keys := make([]string, 0, len(e.Fields))
		for k := range e.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var fields []string
		for _, k := range keys {
			fields = append(fields, text(k)+"="+strconv.Quote(cell(e.Fields[k], 60)))
		}
		_, err := fmt.Fprintf(w, "%s  UNDECODABLE %s  %s\n", id, cell(errString(e.DecodeErr), 100), strings.Join(fields, " "))
		return err
	}
	m := e.Message
	outcome := "ok"
	detail := string(m.Result)
	if !m.Success {
		outcome, detail = "FAILED", strconv.Quote(m.Error)
	}
	if detail == "" {
		detail = "null"
	}
	_, err := fmt.Fprintf(w, "%s  %s  op=%s task=%s  %s\n", id, outcome, cell(m.OperationID, 200), cell(m.TaskID, 200), cell(detail, 120))
	return err
}

// cell makes untrusted s fit a table cell: one line, control characters
// escaped (so that it cannot move the cursor, retitle the terminal or forge
// a line), at most n runes.
func cell(s string, n int) string {
	s = safetext.Escape(strings.Join(strings.Fields(s), " "))
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	if s == "" {
		return "-"
	}
	return s
}

// text makes untrusted s safe to print on one line (see safetext.Escape).
func text(s string) string { return safetext.Escape(s) }

// duration rounds d for a table.
func duration(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// idAge returns " (5m3s ago)" for a stream id, whose first part is its
// creation time in Unix milliseconds.
func idAge(id string, now time.Time) string {
	msPart, _, _ := strings.Cut(id, "-")
	ms, err := strconv.ParseInt(msPart, 10, 64)
	if err != nil {
		return ""
	}
	age := now.Sub(time.UnixMilli(ms))
	if age < 0 {
		age = 0
	}
	return " (" + duration(age) + " ago)"
}
