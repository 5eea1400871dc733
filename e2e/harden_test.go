package e2e

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
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
		{"GET", dev.backend + "/v1/items", "no-store", 401}, // no internal credential
		{"GET", dev.backend + "/v1/nowhere", "no-store", 401},
		{"GET", dev.backend + "/readyz", "no-store", 200},
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

// requestSeries lists the seckill_edge_http_requests_total series the
// admin /metrics shows.
func requestSeries(t *testing.T, admin string) []string {
	t.Helper()
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "seckill_edge_http_requests_total{") {
			out = append(out, line[:strings.LastIndexByte(line, ' ')])
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricSeriesBounded (issue 13 H1): 1,000 invented methods and 1,000
// random paths sent to a real public listener add exactly the series of
// their two route templates (method "other" for the invented ones), not
// 2,000.
func TestMetricSeriesBounded(t *testing.T) {
	t.Parallel()
	dev := startDev(t)
	r := rand.New(rand.NewPCG(13, 1))
	word := func(n int) string {
		const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		b := make([]byte, n)
		for i := range b {
			b[i] = abc[r.IntN(len(abc))]
		}
		return string(b)
	}
	send := func(method, path string) int {
		req, err := http.NewRequest(method, dev.public+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	send("GET", "/api/items")
	before := requestSeries(t, dev.admin)
	for range 1000 {
		if code := send("X"+word(12), "/api/items"); code != http.StatusMethodNotAllowed {
			t.Fatalf("invented method: %d, want 405", code)
		}
	}
	for range 1000 {
		if code := send("GET", "/"+strings.ToLower(word(10))+"/"+word(6)); code != http.StatusNotFound {
			t.Fatalf("random path: %d, want 404", code)
		}
	}
	after := requestSeries(t, dev.admin)
	var added []string
	for _, s := range after {
		if !slices.Contains(before, s) {
			added = append(added, s)
		}
	}
	t.Logf("series before %d, after %d: added %v", len(before), len(after), added)
	want := []string{
		`seckill_edge_http_requests_total{code="404",method="GET",route="/*"}`,
		`seckill_edge_http_requests_total{code="405",method="other",route="/api/items"}`,
	}
	if strings.Join(added, "\n") != strings.Join(want, "\n") {
		t.Fatalf("2,000 hostile requests added %d series:\n%s\nwant:\n%s", len(added), strings.Join(added, "\n"), strings.Join(want, "\n"))
	}
}
