package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"seckill/internal/testenv"
)

// headerStatus sends GET path with one header of n bytes over a raw
// connection (written while the answer is read, as the server answers
// before reading it all) and returns the status.
func headerStatus(t *testing.T, base, path string, n int) int {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", n)+"\r\nConnection: close\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s%s with a %d-byte header: %v", base, path, n, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// addrFromFile waits for a process to write its address to file.
func addrFromFile(t *testing.T, p *proc, file string) string {
	t.Helper()
	var addr string
	testenv.Eventually(t, 30*time.Second, "an address in "+file, func() bool {
		b, err := os.ReadFile(file)
		addr = strings.TrimSpace(string(b))
		return err == nil && addr != ""
	})
	return "http://" + addr
}

// TestEveryListenerBoundsHeaders (issue 13 M6): every listener seckill
// opens answers 431 to a 200 KiB header and to a 24 KiB one (16 KiB bound
// plus Go's 4 KiB slack), and serves a 12 KiB one. Go's default bound,
// 1 MiB, let 200 slow connections hold 380 MB.
func TestEveryListenerBoundsHeaders(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	be := startBackend(t, s, s.amqpURL)
	ep := startEdgeProc(t, s, time.Now().Add(30*time.Second), "--backend-url", be.url)
	workerAddr := freePort(t)
	startProc(t, s.env(s.amqpURL), "worker", "--metrics-listen", workerAddr)
	relayFile := filepath.Join(t.TempDir(), "relay.addr")
	rp := startProc(t, s.env(s.amqpURL), "relay", "--metrics-listen", "127.0.0.1:0", "--addr-file", relayFile)
	helloFile := filepath.Join(t.TempDir(), "hello.addr")
	hp := startProc(t, os.Environ(), "bench", "hello", "--listen", "127.0.0.1:0", "--addr-file", helloFile)
	dev := startDev(t)

	listeners := []struct{ name, base, path string }{
		{"edge public", ep.public, "/healthz"},
		{"edge admin", ep.admin, "/healthz"},
		{"backend", be.url, "/healthz"},
		{"worker metrics", "http://" + workerAddr, "/healthz"},
		{"relay metrics", addrFromFile(t, rp, relayFile), "/healthz"},
		{"bench hello", addrFromFile(t, hp, helloFile), "/"},
		{"dev public", dev.public, "/healthz"},
		{"dev admin", dev.admin, "/healthz"},
		{"dev backend", dev.backend, "/healthz"},
	}
	for _, l := range listeners {
		testenv.Eventually(t, 30*time.Second, l.name+" to answer", func() bool {
			resp, err := client.Get(l.base + l.path)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		for _, tc := range []struct{ n, want int }{
			{12 << 10, http.StatusOK},
			{24 << 10, http.StatusRequestHeaderFieldsTooLarge},
			{200 << 10, http.StatusRequestHeaderFieldsTooLarge},
		} {
			if got := headerStatus(t, l.base, l.path, tc.n); got != tc.want {
				t.Errorf("%s: %d-byte header: status %d, want %d", l.name, tc.n, got, tc.want)
			}
		}
	}
}

// TestAPIAnswerHeaders (issue 13, low): API answers of every listener,
// errors included, carry nosniff and no-store; the storefront's pages and
// assets keep their own caching (no-cache, revalidated).
func TestAPIAnswerHeaders(t *testing.T) {
	t.Parallel()
	dev := startDev(t)
	for _, tc := range []struct {
		method, url, cache string
		status             int
	}{
		{"GET", dev.public + "/api/items", "no-store", 200},
		{"GET", dev.public + "/api/items/999999", "no-store", 404},
		{"POST", dev.public + "/api/login", "no-store", 400},
		{"PATCH", dev.public + "/api/items", "no-store", 405},
		{"GET", dev.public + "/api/nowhere", "no-store", 404},
		{"GET", dev.public + "/healthz", "no-store", 200},
		{"GET", dev.admin + "/admin/items/1/stats", "no-store", 401},
		{"GET", dev.admin + "/metrics", "no-store", 200},
		{"GET", dev.backend + "/v1/items", "no-store", 200},
		{"GET", dev.backend + "/v1/nowhere", "no-store", 404},
		{"GET", dev.public + "/", "no-cache", 200},
		{"GET", dev.public + "/no-such-page", "no-cache", 404},
	} {
		req, err := http.NewRequest(tc.method, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != tc.cache {
			t.Errorf("%s %s: %d, nosniff %q, Cache-Control %q; want %d, nosniff, %q", tc.method, tc.url, resp.StatusCode,
				resp.Header.Get("X-Content-Type-Options"), resp.Header.Get("Cache-Control"), tc.status, tc.cache)
		}
	}
}
