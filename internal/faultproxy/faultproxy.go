// Package faultproxy is a TCP proxy for tests that injects the faults a
// real network produces: replies lost while the request got through,
// latency, and connections cut. It sits between a client and a real server
// (Redis, RabbitMQ, PostgreSQL, ZooKeeper) on a free loopback port.
//
// A lost reply is the fault that makes a blind retry dangerous: the server
// ran the command, the client never heard, and go-redis (MaxRetries) sends
// it again. DropReplies reproduces it exactly: requests keep flowing to the
// server, every byte it answers is discarded.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards every connection accepted on Addr to the upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string

	dropReplies atomic.Bool
	dropped     atomic.Int64 // reply bytes discarded
	latency     atomic.Int64 // nanoseconds added before each forwarded chunk
	refuse      atomic.Bool  // close new connections at once

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	done  chan struct{}
}

// New listens on a free loopback port and forwards to upstream.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial instead of the upstream's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// DropReplies starts (true) or stops (false) discarding everything the
// upstream sends back. Requests still reach the upstream.
func (p *Proxy) DropReplies(on bool) { p.dropReplies.Store(on) }

// Dropped is how many reply bytes were discarded so far.
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

// SetLatency delays every chunk forwarded in either direction by d.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Refuse makes the proxy close new connections at once (true), as a server
// that is down; existing connections are not touched (see CutAll).
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// CutAll closes every open connection, as a network reset does.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// Close stops listening, cuts every connection and waits for its goroutines.
func (p *Proxy) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	close(p.done)
	err := p.ln.Close()
	p.CutAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p.refuse.Load() {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pipe(server, client, false)
		_ = server.Close()
	}()
	go func() {
		defer wg.Done()
		p.pipe(client, server, true)
		_ = client.Close()
	}()
	wg.Wait()
}

// pipe copies src to dst; reply is true for the upstream-to-client side.
func (p *Proxy) pipe(dst io.Writer, src io.Reader, reply bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.latency.Load()); d > 0 {
				select {
				case <-time.After(d):
				case <-p.done:
					return
				}
			}
			if reply && p.dropReplies.Load() {
				p.dropped.Add(int64(n))
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
