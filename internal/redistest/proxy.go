package redistest

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxyDialTimeout bounds the proxy's dial to its target.
const proxyDialTimeout = 5 * time.Second

// Proxy is a loopback TCP proxy for cutting and refusing connections to a
// target address. Each connection accepted on Addr is forwarded to the
// target over a new connection, and bytes are copied both ways until either
// side closes, CutAll cuts it, or the proxy is closed.
//
// Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	refuse atomic.Bool
	stall  atomic.Bool

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// proxyConn is one forwarded connection: the accepted client side and the
// dialed target side (nil while dialing).
type proxyConn struct {
	client net.Conn
	server net.Conn
}

func (c *proxyConn) close() {
	_ = c.client.Close()
	if c.server != nil {
		_ = c.server.Close()
	}
}

// NewProxy starts a proxy that listens on 127.0.0.1 on a free port and
// forwards each accepted connection to target. It is closed in t.Cleanup,
// after which none of its goroutines remain.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr returns the address clients should connect to, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutAll closes every live connection, both the client side and the target
// side, and returns how many it closed. New connections are still accepted
// and forwarded (unless SetRefuse(true) is in force).
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.close()
		delete(p.conns, c)
	}
	return n
}

// SetRefuse sets whether new connections are refused. While refusing, the
// proxy accepts each new connection and closes it at once, as a server that
// is down would look to a client that got past connect. Live connections
// are left alone; use CutAll to cut them.
func (p *Proxy) SetRefuse(refuse bool) { p.refuse.Store(refuse) }

// Close stops accepting, closes every connection, and waits until all the
// proxy's goroutines are done (each has at most its return left to run). It
// is idempotent: later calls return nil.
func (p *Proxy) Close() error {
	var err error
	p.stall.Store(false) // let held reads return
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		err = p.ln.Close()
		for c := range p.conns {
			c.close()
			delete(p.conns, c)
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Temporary errors such as EMFILE: back off a little, unless
			// the proxy is closing.
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if p.refuse.Load() {
			_ = conn.Close()
			continue
		}
		pc := &proxyConn{client: conn}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = conn.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc)
	}
}

// serve dials the target for pc and copies both ways until either side is
// done, then closes both.
func (p *Proxy) serve(pc *proxyConn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	p.mu.Lock()
	_, live := p.conns[pc] // false when cut or closed while dialing
	if err != nil || !live {
		delete(p.conns, pc)
		p.mu.Unlock()
		_ = pc.client.Close()
		if server != nil {
			_ = server.Close()
		}
		return
	}
	pc.server = server
	p.mu.Unlock()

	var copies sync.WaitGroup
	copies.Add(2)
	pipe := func(dst, src net.Conn) {
		defer copies.Done()
		_, _ = io.Copy(dst, stallReader{src, &p.stall})
		// One direction ended: end the other one too.
		pc.close()
	}
	go pipe(server, pc.client)
	go pipe(pc.client, server)
	copies.Wait()

	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// SetStall makes the proxy hold every byte in both directions while stall is
// true, with connections left open: Redis goes silent, as behind a network
// that drops packets, instead of refusing. Held bytes flow on once it is
// false again.
func (p *Proxy) SetStall(stall bool) { p.stall.Store(stall) }

// stallReader reads from r, and holds what it read while stall is set.
type stallReader struct {
	r     io.Reader
	stall *atomic.Bool
}

func (s stallReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	for s.stall.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	return n, err
}
