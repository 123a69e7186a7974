package dashboard

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// reasonScanLimit is the most dead letters a page reads to count them by
// reason; past it, the page says how many there are and not of which
// reason (inspect.Inspector.DeadLetterReasons reads every dead letter).
const reasonScanLimit = 50_000

// knownReasons are the reasons consumers write, for the reason filter.
var knownReasons = []string{
	completion.ReasonMalformed, completion.ReasonOversize, completion.ReasonTaskNotFound,
	completion.ReasonInvalidTask, completion.ReasonTaskMismatch, completion.ReasonPermanent,
	completion.ReasonMaxDeliveries,
}

// reasonCount is how many dead letters there are of one reason.
type reasonCount struct {
	Reason string
	Count  int64
}

// streamOverview is one stream on the overview.
type streamOverview struct {
	Name        string
	Group       string // the inspector's group
	Info        inspect.StreamInfo
	Partitioned bool
	Reasons     []reasonCount // nil when not counted
	Uncounted   bool          // too many dead letters to count by reason
	Parts       []partRow     // of a partitioned stream
	Err         string
	Chart       chartView
}

// partRow is one partition of a partitioned stream on the overview, with
// the pending count and lag of the inspector's group.
type partRow struct {
	Index         int
	Stream, Owner string
	Length, Dead  int64
	Pending, Lag  int64
	LagKnown      bool
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	var out []streamOverview
	for _, s := range h.streams {
		out = append(out, h.streamOverview(r.Context(), s))
	}
	h.render(w, r, http.StatusOK, "overview", "Overview", nil, out)
}

// streamOverview reads one stream's state for the overview.
func (h *Handler) streamOverview(ctx context.Context, s *stream) streamOverview {
	o := streamOverview{Name: s.name, Group: s.in.Config().Group, Partitioned: s.in.Config().Partitions > 1, Chart: h.chartOf(s)}
	si, err := s.in.Info(ctx)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	o.Info = si
	for i, p := range si.Partitions {
		row := partRow{Index: i, Stream: p.Stream, Owner: p.Owner, Length: p.Length, Dead: p.DeadLetterLength, LagKnown: true}
		if g, ok := p.Group(o.Group); ok {
			row.Pending, row.Lag, row.LagKnown = g.Pending, g.Lag, g.LagKnown
		}
		o.Parts = append(o.Parts, row)
	}
	o.Reasons, o.Uncounted, err = reasonsOf(ctx, s, si.DeadLetterLength)
	if err != nil {
		o.Err = err.Error()
	}
	return o
}

// reasonsOf counts stream s's dead letters by reason, most first, unless
// there are more than reasonScanLimit (then it reports true).
func reasonsOf(ctx context.Context, s *stream, total int64) ([]reasonCount, bool, error) {
	if total > reasonScanLimit {
		return nil, true, nil
	}
	if total == 0 {
		return []reasonCount{}, false, nil
	}
	m, err := s.in.DeadLetterReasons(ctx)
	if err != nil {
		return nil, false, err
	}
	out := make([]reasonCount, 0, len(m))
	for reason, n := range m {
		out = append(out, reasonCount{reason, n})
	}
	slices.SortFunc(out, func(a, b reasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Reason, b.Reason))
	})
	return out, false, nil
}

// pendingView is the pending entries page.
type pendingView struct {
	Group, Consumer, Start string
	Groups                 []inspect.GroupInfo
	Entries                []inspect.PendingEntry
	Next                   string // the next page's start, "" when this one is not full
	Partitioned            bool
}

func (h *Handler) pending(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	v := pendingView{Group: r.FormValue("group"), Consumer: r.FormValue("consumer"), Start: r.FormValue("start"),
		Partitioned: s.in.Config().Partitions > 1}
	if v.Group == "" {
		v.Group = s.in.Config().Group
	}
	si, err := s.in.Info(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusBadGateway, err)
		return
	}
	v.Groups = si.Groups
	if _, ok := si.Group(v.Group); ok {
		v.Entries, err = s.in.Pending(r.Context(), inspect.PendingQuery{Group: v.Group, Consumer: v.Consumer, Start: v.Start, Count: h.opts.PageSize})
		if err != nil {
			h.fail(w, r, statusOf(err), err)
			return
		}
	}
	if len(v.Entries) == h.opts.PageSize {
		v.Next = "(" + v.Entries[len(v.Entries)-1].Ref
	}
	h.render(w, r, http.StatusOK, "pending", "Pending entries", s, v)
}

// deadView is the dead letters page.
type deadView struct {
	Reason, Start string
	Reasons       []reasonCount // every known reason and those counted, with counts when counted
	Total         int64
	Page          inspect.DeadLetterPage
	Partitioned   bool
}

func (h *Handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	v := deadView{Reason: r.FormValue("reason"), Start: r.FormValue("start"), Partitioned: s.in.Config().Partitions > 1}
	si, err := s.in.Info(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusBadGateway, err)
		return
	}
	v.Total = si.DeadLetterLength
	counted, _, err := reasonsOf(r.Context(), s, si.DeadLetterLength)
	if err != nil {
		h.fail(w, r, http.StatusBadGateway, err)
		return
	}
	v.Reasons = mergeReasons(counted, v.Reason)
	v.Page, err = s.in.DeadLetters(r.Context(), inspect.DeadLetterQuery{Start: v.Start, Count: h.opts.PageSize, Reason: v.Reason})
	if err != nil {
		h.fail(w, r, statusOf(err), err)
		return
	}
	h.render(w, r, http.StatusOK, "dead", "Dead letters", s, v)
}

// mergeReasons returns the known reasons, those counted and the one
// filtered on, each once, with the counts where counted (-1 otherwise).
func mergeReasons(counted []reasonCount, current string) []reasonCount {
	n := map[string]int64{}
	for _, c := range counted {
		n[c.Reason] = c.Count
	}
	var out []reasonCount
	seen := map[string]bool{}
	add := func(reason string) {
		if reason == "" || seen[reason] {
			return
		}
		seen[reason] = true
		c, ok := n[reason]
		if !ok && counted == nil {
			c = -1
		}
		out = append(out, reasonCount{reason, c})
	}
	for _, reason := range knownReasons {
		add(reason)
	}
	for _, c := range counted {
		add(c.Reason)
	}
	add(current)
	return out
}

// statusOf is the status of a failed inspector call: 400 for a malformed
// start or ref, 502 for Redis's errors.
func statusOf(err error) int {
	msg := err.Error()
	if strings.Contains(msg, "is not an id") || strings.Contains(msg, "not a full") || strings.Contains(msg, "want PARTITION/ID") ||
		strings.Contains(msg, "names no partition") {
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}
