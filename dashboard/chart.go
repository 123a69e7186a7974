package dashboard

import (
	"strconv"
	"strings"
	"time"
)

// The size of one chart panel, in SVG user units.
const (
	chartWidth  = 300
	chartHeight = 90
	chartTop    = 14 // room for the scale's label
)

// chartView is a stream's chart: a panel per series over the samples of
// the last ChartWindow.
type chartView struct {
	Group    string  // the group whose lag and pending entries are drawn
	Interval string  // the sample interval
	Running  bool    // Handler.Run is sampling
	Samples  int     // how many samples there are
	Err      string  // the last sample's error, if it failed
	Panels   []panel // lag, pending, dead letters; none without samples
	Span     string  // the time the panels cover, up to now
	Width    int
	Height   int
}

// panel is one series drawn as a polyline, with its scale.
type panel struct {
	Title  string
	Class  string // the CSS class of its line
	Latest int64
	Max    int64  // the top of the scale
	Points string // the polyline's points
	LastX  string // the newest sample's position
	LastY  string
}

// chartOf draws the samples of stream s up to now.
func (h *Handler) chartOf(s *stream) chartView {
	list, err := s.samples.snapshot()
	c := chartView{Group: s.in.Config().Group, Interval: h.opts.SampleInterval.String(), Running: h.running.Load(),
		Samples: len(list), Width: chartWidth, Height: chartHeight}
	if err != nil {
		c.Err = err.Error()
	}
	now := h.now()
	for len(list) > 0 && list[0].at.Before(now.Add(-ChartWindow)) {
		list = list[1:] // samples of a sampler that stopped long ago
	}
	c.Samples = len(list)
	if len(list) == 0 {
		return c
	}
	span := chartSpan(now.Sub(list[0].at), h.opts.SampleInterval)
	c.Span = duration(span)
	series := []struct {
		title, class string
		value        func(sample) int64
	}{
		{"Lag", "lag", func(x sample) int64 { return x.lag }},
		{"Pending", "pending", func(x sample) int64 { return x.pending }},
		{"Dead letters", "dead", func(x sample) int64 { return x.dead }},
	}
	for _, sr := range series {
		c.Panels = append(c.Panels, drawPanel(sr.title, sr.class, list, now, span, sr.value))
	}
	return c
}

// chartSpan is the time a chart covers: since its oldest sample (age), at
// most ChartWindow, and at least ten sample intervals, so that the first
// samples of a dashboard that just started do not fall on one point.
func chartSpan(age, interval time.Duration) time.Duration {
	return min(max(age, 10*interval), ChartWindow)
}

// drawPanel draws one series of list (oldest first) over span up to now:
// at most one point per unit of width (the largest value there), the scale
// from 0 to a round number at or above the largest value.
func drawPanel(title, class string, list []sample, now time.Time, span time.Duration, value func(sample) int64) panel {
	p := panel{Title: title, Class: class, Latest: value(list[len(list)-1])}
	for _, x := range list {
		p.Max = max(p.Max, value(x))
	}
	p.Max = roundUp(p.Max)
	start := now.Add(-span)
	type point struct{ x, v int64 }
	var pts []point
	for _, x := range list {
		if x.at.Before(start) {
			continue
		}
		px := int64(float64(x.at.Sub(start)) / float64(span) * chartWidth)
		px = min(max(px, 0), chartWidth)
		v := value(x)
		if n := len(pts); n > 0 && pts[n-1].x == px {
			pts[n-1].v = max(pts[n-1].v, v)
			continue
		}
		pts = append(pts, point{px, v})
	}
	y := func(v int64) string {
		return strconv.FormatFloat(chartHeight-float64(v)/float64(p.Max)*(chartHeight-chartTop), 'f', 1, 64)
	}
	var b strings.Builder
	for i, pt := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatInt(pt.x, 10) + "," + y(pt.v))
	}
	p.Points = b.String()
	last := pts[len(pts)-1]
	p.LastX, p.LastY = strconv.FormatInt(last.x, 10), y(value(list[len(list)-1]))
	return p
}

// roundUp returns the smallest of 1, 2 and 5 times a power of ten at or
// above n (at least 1), for a scale.
func roundUp(n int64) int64 {
	for base := int64(1); ; base *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*base >= n {
				return m * base
			}
		}
		if base > (1<<62)/10 {
			return n
		}
	}
}
