package taskstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribeChunk is the most channels one SUBSCRIBE or UNSUBSCRIBE names.
const subscribeChunk = 1000

// listener owns the hub's pub/sub connection: manage keeps its channel
// subscriptions in step with the tasks that have subscribers, receive turns
// what arrives into reads.
type listener struct {
	h      *Hub
	prefix string
	// canary is a channel of this listener's own: manage publishes a
	// sequence number on it through the client's ordinary connections
	// every HealthCheckInterval, and a connection that does not hear it is
	// replaced. That catches a connection left on a node that no longer
	// gets the writes (a Sentinel failover moves the client's pooled
	// connections to the new master, not its pub/sub one).
	canary                string
	canarySent, canaryGot atomic.Int64

	mu     sync.Mutex // guards ps, sent and closed; held while writing to ps
	ps     *redis.PubSub
	sent   map[string]struct{} // channels subscribed on ps (as last sent)
	closed bool

	receiveLog, manageLog rateLimited
}

func newListener(h *Hub) *listener {
	l := &listener{
		h:      h,
		prefix: h.streams.cfg.ChannelPrefix,
		canary: fmt.Sprintf("taskstream:hub:%016x", rand.Uint64()),
		sent:   make(map[string]struct{}),
	}
	l.sent[l.canary] = struct{}{}
	l.ps = h.streams.client.Subscribe(context.Background())
	return l
}

// drop closes the current connection, so that receive replaces it.
func (l *listener) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.ps.Close()
}

// close closes the pub/sub connection, which ends a blocked receive.
func (l *listener) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	_ = l.ps.Close()
}

// renew replaces the pub/sub connection by a new one subscribed to every
// channel in sent. It returns false when the listener is closed.
func (l *listener) renew(ctx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	_ = l.ps.Close()
	l.ps = l.h.streams.client.Subscribe(context.Background())
	// Subscribe records the channels even when the write fails; the next
	// receive connects and subscribes to all of them. The order is random,
	// so that on a cluster the connection (made to the node of the first
	// channel's slot) lands on a random node.
	l.subscribeLocked(ctx, slices.Collect(maps.Keys(l.sent)))
	return true
}

func (l *listener) subscribeLocked(ctx context.Context, channels []string) {
	for chunk := range slices.Chunk(channels, subscribeChunk) {
		if err := l.ps.Subscribe(ctx, chunk...); err != nil && l.manageLog.allow() {
			l.h.log.Warn("taskstream: subscribe to task channels (the hub reconnects and re-reads)", "err", err)
		}
	}
}

// receive reads the pub/sub connection until ctx ends. A message on a task's
// channel, and the confirmation of a subscription to it, ask for a read of
// the task; the first reply after the connection was (re)established asks
// for a read of every task, so that nothing published while it was down is
// missed.
func (l *listener) receive(ctx context.Context) {
	h := l.h
	interval := h.cfg.HealthCheckInterval
	backoff := time.Duration(0)
	resync := true // the connection is new
	// Connect at once (subscribing to the canary), so that Connected turns
	// true without waiting for a first task.
	l.mu.Lock()
	l.subscribeLocked(ctx, []string{l.canary})
	l.mu.Unlock()
	pinged := false
	for ctx.Err() == nil {
		l.mu.Lock()
		ps := l.ps
		l.mu.Unlock()
		msg, err := ps.ReceiveTimeout(ctx, interval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if isTimeout(err) && !pinged {
				// Silent for an interval: ask for an answer. The PING
				// gets an interval too: when go-redis has dropped the
				// connection, it dials and says HELLO again first, and
				// behind a silent network that waits out every retry.
				pinged = true
				pctx, cancel := context.WithTimeout(ctx, interval)
				err := ps.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			// Dead (an error, or a PING unanswered for an interval):
			// start over on a new connection, then re-read everything.
			if h.connected.Swap(false) {
				h.reconnects.Add(1)
			}
			if l.receiveLog.allow() {
				h.log.Warn("taskstream: pub/sub connection lost; reconnecting, then re-reading every subscribed task", "err", err)
			}
			backoff = nextBackoff(backoff, h.cfg.ErrorBackoff, h.cfg.MaxErrorBackoff)
			if !sleep(ctx, backoff) || !l.renew(ctx) {
				return
			}
			resync, pinged = true, false
			continue
		}
		pinged, backoff = false, 0
		if resync {
			// Every reply on this connection follows its subscriptions:
			// from now on a write is announced to us, and a read of every
			// task covers what came before.
			resync = false
			h.connected.Store(true)
			h.resyncAll(true)
		}
		l.handle(msg)
	}
}

// handle acts on one pub/sub message: a canary echo is recorded; a task's
// notification, or the confirmation of a subscription to its channel (what
// was written before it may have gone unannounced), has the task read.
func (l *listener) handle(msg any) {
	h := l.h
	switch m := msg.(type) {
	case *redis.Message:
		if m.Channel == l.canary {
			if n, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
				l.canaryGot.Store(n)
			}
			return
		}
		if id, ok := strings.CutPrefix(m.Channel, l.prefix); ok {
			h.notifications.Add(1)
			h.notify(id)
		}
	case *redis.Subscription:
		if m.Kind == "subscribe" {
			if id, ok := strings.CutPrefix(m.Channel, l.prefix); ok {
				h.notify(id)
			}
		}
	}
}

// manage subscribes to the channels of tasks that got their first
// subscriber and unsubscribes from those of tasks that lost their last, in
// batches; runs the periodic resync; and publishes the canary.
func (l *listener) manage(ctx context.Context) {
	h := l.h
	resync := time.NewTicker(h.cfg.ResyncInterval)
	defer resync.Stop()
	health := time.NewTicker(h.cfg.HealthCheckInterval)
	defer health.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			h.resyncAll(false)
			continue
		case <-health.C:
			l.checkCanary(ctx)
			continue
		case <-h.changesWake:
		}
		var add, remove []string
		l.mu.Lock()
		h.mu.Lock()
		for id := range h.channelChanges {
			ch := l.prefix + id
			_, want := h.tasks[id]
			_, have := l.sent[ch]
			switch {
			case want && !have:
				l.sent[ch] = struct{}{}
				add = append(add, ch)
			case !want && have:
				delete(l.sent, ch)
				remove = append(remove, ch)
			}
		}
		clear(h.channelChanges)
		h.mu.Unlock()
		if !l.closed {
			for chunk := range slices.Chunk(remove, subscribeChunk) {
				if err := l.ps.Unsubscribe(ctx, chunk...); err != nil && l.manageLog.allow() {
					h.log.Warn("taskstream: unsubscribe from task channels", "err", err)
				}
			}
			l.subscribeLocked(ctx, add)
		}
		l.mu.Unlock()
	}
}

// checkCanary replaces the connection if it did not hear the last canary
// (published an interval ago, successfully), then publishes the next one.
func (l *listener) checkCanary(ctx context.Context) {
	h := l.h
	if sent := l.canarySent.Load(); sent > 0 && l.canaryGot.Load() < sent && h.connected.Load() {
		if l.receiveLog.allow() {
			h.log.Warn("taskstream: the pub/sub connection does not hear what is published; reconnecting, then re-reading every subscribed task")
		}
		l.canarySent.Store(0)
		l.drop()
		return
	}
	next := l.canaryGot.Load() + 1
	pctx, cancel := context.WithTimeout(ctx, h.cfg.HealthCheckInterval)
	defer cancel()
	// On one of the readers' connection slots, so that the hub never
	// holds more than Readers ordinary connections.
	err := h.pipelined(pctx, func(p redis.Pipeliner) error {
		p.Publish(pctx, l.canary, next)
		return nil
	})
	if err != nil {
		l.canarySent.Store(0) // Redis is not reachable for writes, or no slot came free: no verdict
		return
	}
	l.canarySent.Store(next)
}

// isTimeout reports whether err is a read timeout (the connection is fine).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// nextBackoff doubles d from lo up to hi.
func nextBackoff(d, lo, hi time.Duration) time.Duration {
	if d < lo {
		return lo
	}
	return min(2*d, hi)
}
