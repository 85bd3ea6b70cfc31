package allocator_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutProxy forwards TCP connections to a Redis server. Armed, it lets the
// next command of a non-pubsub connection reach the server and then cuts
// that connection before the reply comes back, and refuses every new
// connection until healed: a network partition right after a request was
// applied. Pub/sub connections keep working.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	cut    atomic.Bool
	cutCh  chan struct{}
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cutCh: make(chan struct{})}
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) heal() { p.cut.Store(false) }

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(c, s)
	}
}

func (p *cutProxy) pipe(c, s net.Conn) {
	var pubsub atomic.Bool
	var dead atomic.Bool
	go func() { // server → client
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 && !dead.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				pubsub.Store(true)
			}
			if !pubsub.Load() && p.cut.Load() {
				_ = c.Close()
				_ = s.Close()
				return
			}
			if !pubsub.Load() && p.armed.Load() && p.armed.CompareAndSwap(true, false) {
				// This request reaches the server; its reply does not.
				dead.Store(true)
				p.cut.Store(true)
				p.once.Do(func() { close(p.cutCh) })
				_, _ = s.Write(buf[:n])
				_ = c.Close()
				time.AfterFunc(300*time.Millisecond, func() { _ = s.Close() })
				return
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				_ = c.Close()
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = s.Close()
			}
			_ = s.Close()
			return
		}
	}
}
