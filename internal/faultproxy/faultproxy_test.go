package faultproxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer answers every line with "ok <line>" and counts the lines.
func echoServer(t *testing.T) (addr string, lines chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lines = make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					lines <- strings.TrimSpace(l)
					if _, err := c.Write([]byte("ok " + l)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), lines
}

func TestDropRepliesLetsRequestsThrough(t *testing.T) {
	addr, lines := echoServer(t)
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	if _, err := c.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.ReadString('\n'); got != "ok a\n" {
		t.Fatalf("reply %q, want %q", got, "ok a\n")
	}
	<-lines

	p.DropReplies(true)
	if _, err := c.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if l != "b" {
			t.Fatalf("server got %q, want b", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the server")
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if got, err := r.ReadString('\n'); err == nil {
		t.Fatalf("reply %q came through while replies are dropped", got)
	}
	if p.Dropped() != int64(len("ok b\n")) {
		t.Fatalf("dropped %d bytes, want %d", p.Dropped(), len("ok b\n"))
	}
}

func TestCutAllAndRefuse(t *testing.T) {
	addr, _ := echoServer(t)
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	p.CutAll()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after CutAll")
	}

	p.Refuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(c2).ReadString('\n'); err == nil {
		t.Fatal("a refused connection answered")
	}
}
