package engine

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/streamrelay/completion/internal/scripts"
)

// janitor keeps the group tidy. With Params.Heartbeat it announces this
// consumer every LeaseInterval in the member set (scored with the server's
// clock), which names the consumers alive; every StaleConsumerAge/4 it
// removes consumers that left: idle for StaleConsumerAge, holding nothing,
// and not alive. At a clean stop it removes this consumer from the group
// when it holds nothing, and from the member set.
type janitor struct {
	e    *Engine
	quit chan struct{}
	done chan struct{}
}

func (j *janitor) run() {
	e := j.e
	defer close(j.done)
	every := e.p.LeaseInterval
	cleanEvery := max(1, int(e.p.StaleConsumerAge/4/every))
	timer := e.p.Clock.NewTimer(0)
	defer timer.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-j.quit:
			return
		case <-timer.C():
			timer.Reset(every)
		}
		if e.p.Heartbeat {
			j.heartbeat()
		}
		if tick%cleanEvery == 0 {
			j.removeStale()
		}
		e.signal("janitor")
	}
}

// heartbeat refreshes this consumer in the member set and learns who is
// alive.
func (j *janitor) heartbeat() {
	e := j.e
	ctx, cancel := context.WithTimeout(e.ioCtx, e.p.LeaseInterval)
	defer cancel()
	names, err := scripts.Heartbeat.Run(ctx, e.p.Client, []string{e.p.MembersKey}, e.p.Consumer, e.p.ClaimMinIdle.Milliseconds()).StringSlice()
	if err != nil {
		e.rep.fail("heartbeat", err)
		return
	}
	e.p.Live.Set(names)
}

// removeStale removes departed consumers from the group.
func (j *janitor) removeStale() {
	e := j.e
	args := []any{e.p.Group, strconv.FormatInt(e.p.StaleConsumerAge.Milliseconds(), 10), e.p.Consumer}
	for _, name := range e.p.Live.Names() {
		args = append(args, name)
	}
	deleted, err := scripts.StaleConsumers.Run(e.ioCtx, e.p.Client, []string{e.p.Stream}, args...).StringSlice()
	if err != nil {
		if !isNoGroup(err) && !e.stopped() {
			e.rep.fail("remove-stale-consumers", err)
		}
		return
	}
	if len(deleted) > 0 {
		e.log.Info("removed departed consumers from the group", slog.Any("consumers", deleted))
	}
}

// finish stops the janitor and, after a clean stop, takes this consumer out
// of the group when it holds no pending entries (one with pending entries
// stays, so that another can claim them) and out of the member set, within
// deadline.
func (j *janitor) finish(deadline time.Time, clean bool) {
	e := j.e
	close(j.quit)
	timer := e.p.Clock.NewTimer(finalTimeout(e.p.Clock.Now(), deadline))
	defer timer.Stop()
	select {
	case <-j.done:
	case <-timer.C():
		return // stuck in a Redis call: Redis does not answer
	}
	if !clean {
		return
	}
	e.jobs.goJob("leave", func() {
		ctx, cancel := context.WithDeadline(e.ioCtx, deadline)
		defer cancel()
		n, err := scripts.RemoveSelf.Run(ctx, e.p.Client, []string{e.p.Stream}, e.p.Group, e.p.Consumer).Int64()
		switch {
		case err != nil:
			if !isNoGroup(err) {
				e.log.Debug("could not remove this consumer from the group", slog.Any("err", err))
			}
		case n < 0:
			e.log.Info("stopping with entries still pending; another consumer will claim them after ClaimMinIdle")
		}
		if e.p.Heartbeat {
			if err := e.p.Client.ZRem(ctx, e.p.MembersKey, e.p.Consumer).Err(); err != nil {
				e.log.Debug("could not leave the member set; the others notice after ClaimMinIdle", slog.Any("err", err))
			}
		}
	})
}
