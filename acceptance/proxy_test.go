package acceptance_test

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluicelog/sluice/internal/testenv"
)

// tcpProxy is a loopback TCP proxy that a test puts between sluice and a store, so that it can make
// the store unreachable and bring it back without touching the store itself.
//
// Cut resets every live connection and, until Restore, resets every new one as soon as it is
// accepted: the client sees "connection reset by peer" at once, as when a server goes away, and not a
// hang. The listener stays open so that the address stays the same.
//
// BlackHole is the other way a server goes away: every connection, live or new, stays open and
// nothing it sends is answered (what it sends is read and dropped), as with a server that hangs or a
// network that drops packets. Only Close ends it.
type tcpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	closed bool
	hole   atomic.Bool
	wg     sync.WaitGroup
}

// newProxy listens on 127.0.0.1:0 and forwards to target; it is closed when the test ends.
func newProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

// Cut makes the target unreachable: live connections are reset, new ones are reset on accept.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	p.cut = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		resetConn(c)
	}
}

// BlackHole stops forwarding anything, in both directions, on live connections and new ones, and keeps
// them open: the client waits for answers that never come.
func (p *tcpProxy) BlackHole() { p.hole.Store(true) }

// Restore forwards new connections again.
func (p *tcpProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Close stops the proxy and waits for its goroutines.
func (p *tcpProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// resetConn closes c with an RST (SO_LINGER 0) rather than a FIN, when it is a TCP connection.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// track registers c unless the proxy is cut or closed, in which case it reports false.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.t.Logf("proxy: accept: %v", err)
			}
			return
		}
		if !p.track(client) {
			resetConn(client)
			continue
		}
		p.wg.Add(1)
		if p.hole.Load() {
			go p.swallow(client)
			continue
		}
		go p.serve(client)
	}
}

func (p *tcpProxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		resetConn(client)
		return
	}
	if !p.track(server) { // cut while dialing
		resetConn(server)
		resetConn(client)
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(holeWriter{dst, &p.hole}, src)
		// One side ended: end both (a cut resets them; a normal close closes them).
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// swallow reads and drops what a connection accepted in black-hole mode sends, until it is closed.
func (p *tcpProxy) swallow(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

// holeWriter writes to w until the proxy is a black hole, then drops everything.
type holeWriter struct {
	w    io.Writer
	hole *atomic.Bool
}

func (h holeWriter) Write(b []byte) (int, error) {
	if h.hole.Load() {
		return len(b), nil
	}
	return h.w.Write(b)
}

// postgresThroughProxy returns the test database's DSN, a proxy to its server, and the same DSN
// through the proxy (with a 2 s connect timeout), for a demo whose PostgreSQL the test cuts off.
func postgresThroughProxy(t *testing.T) (dsn string, proxy *tcpProxy, via string) {
	t.Helper()
	dsn = testenv.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy = newProxy(t, u.Host)
	v := *u
	v.Host = proxy.Addr()
	q := v.Query()
	q.Set("connect_timeout", "2")
	v.RawQuery = q.Encode()
	return dsn, proxy, v.String()
}
