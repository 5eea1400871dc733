package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
)

// ForwardingError says that the edge does not believe the lab's
// X-Forwarded-For: every lab user would count as one client, so per-IP
// buckets throttle honest users as one flood and the numbers mean nothing.
type ForwardingError struct {
	Rule      string    // the per-IP policy both probes drew on
	Quota     int       // its q
	Remaining [2]int    // r after the first and the second probe
	Addrs     [2]string // the forwarded addresses sent
	From      string    // the lab's own address as the edge sees it
}

func (e *ForwardingError) Error() string {
	from := e.From
	if from == "" {
		from = "127.0.0.1"
	}
	cidr := from + "/32"
	if ip := net.ParseIP(from); ip != nil && ip.To4() == nil {
		cidr = from + "/128"
	}
	return fmt.Sprintf(`the edge does not believe the lab's X-Forwarded-For: %d requests from %s and then one from %s drew on one bucket (%q: %d, then %d of %d left; a new client would have %d left), so every lab user counts as one client and the per-IP limits would throttle them all as one flood.
Fix: let the edge trust the lab's address %s, then run the lab again:
  make up LAB=1                        (the real stack: the edge trusts loopback)
  seckill dev --trusted-proxies %s
  seckill edge --trusted-proxies %s (or SECKILL_TRUSTED_PROXIES, or trusted-proxies in the edge's YAML config file)
or set "xff: false" in the scenario to play every user from the lab's one address`,
		probeBurst, e.Addrs[0], e.Addrs[1], e.Rule, e.Remaining[0], e.Remaining[1], e.Quota, e.Quota-1, from, cidr, cidr)
}

// probeBurst is how many catalogue reads the first address sends at once:
// at the shipped catalog-per-ip rate (50/s) a shared bucket needs 800 ms to
// refill them, far longer than the probe takes.
const probeBurst = 40

// CheckForwarding asks the edge whether it believes the X-Forwarded-For the
// lab sends: a burst of catalogue reads from one fresh random address (in
// 198.18.0.0/15, the benchmarking range), then one read from another. If
// the edge believes the addresses, the second draws on a fresh per-IP bucket
// and its RateLimit header reports q-1 left; if not, it draws on the bucket
// the burst emptied. It then returns a *ForwardingError naming the fix. When
// the edge advertises no per-IP RateLimit policy on the catalogue (its name
// has "ip" in it, as in configs/limits.yaml; none when buckets are off) it
// cannot tell and returns nil with a note for the report.
func CheckForwarding(ctx context.Context, hc *http.Client, edgeURL string) (note string, err error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	type result struct {
		rule string
		q, r int
		ok   bool
	}
	var mu sync.Mutex
	var from string
	get := func(addr string) (result, error) {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if h, _, err := net.SplitHostPort(ci.Conn.LocalAddr().String()); err == nil {
				mu.Lock()
				from = h
				mu.Unlock()
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", strings.TrimRight(edgeURL, "/")+"/api/items", nil)
		if err != nil {
			return result{}, fmt.Errorf("checking X-Forwarded-For: %w", err)
		}
		req.Header.Set("X-Forwarded-For", addr)
		resp, err := hc.Do(req)
		if err != nil {
			return result{}, fmt.Errorf("checking X-Forwarded-For (GET %s/api/items): %w", edgeURL, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		var res result
		res.rule, res.q, res.r, res.ok = parseRateLimit(resp.Header)
		return res, nil
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	addrs := [2]string{fmt.Sprintf("198.%d.%d.%d", 18+int(b[0]&1), b[1], 1+b[2]%127), fmt.Sprintf("198.%d.%d.%d", 18+int(b[0]&1), b[1], 128+b[2]%127)}

	// The burst from the first address.
	var wg sync.WaitGroup
	firsts := make([]result, probeBurst)
	errs := make([]error, probeBurst)
	for i := range probeBurst {
		wg.Add(1)
		go func() { defer wg.Done(); firsts[i], errs[i] = get(addrs[0]) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	first := firsts[0]
	for _, f := range firsts[1:] {
		if f.ok && f.rule == first.rule && f.r < first.r {
			first = f
		}
	}
	second, err := get(addrs[1])
	if err != nil {
		return "", err
	}
	if !first.ok || !second.ok || first.rule != second.rule {
		return "the lab could not check that the edge believes its X-Forwarded-For (no RateLimit policy on GET /api/items): if the edge does not trust the lab's address, every lab user counts as one client", nil
	}
	if second.r == second.q-1 {
		return "", nil
	}
	// A shared bucket is what a per-IP rule ignoring the forwarded address
	// and a global rule both look like; only the rule's name tells them
	// apart (configs/limits.yaml names its per-IP rules *-per-ip).
	if !strings.Contains(strings.ToLower(second.rule), "ip") {
		return fmt.Sprintf("the lab could not check that the edge believes its X-Forwarded-For: the catalogue's tightest bucket is %q, not a per-IP one", second.rule), nil
	}
	mu.Lock()
	defer mu.Unlock()
	return "", &ForwardingError{Rule: second.rule, Quota: second.q, Remaining: [2]int{first.r, second.r}, Addrs: addrs, From: from}
}

// parseRateLimit reads the policy name and quota of RateLimit-Policy and the
// remaining quota of RateLimit (`"name";q=100;w=2` and `"name";r=99;t=1`).
func parseRateLimit(h http.Header) (rule string, q, r int, ok bool) {
	name, pq, ok1 := sfParam(h.Get("RateLimit-Policy"), "q")
	name2, pr, ok2 := sfParam(h.Get("RateLimit"), "r")
	if !ok1 || !ok2 || name != name2 {
		return "", 0, 0, false
	}
	return name, pq, pr, true
}

func sfParam(v, key string) (name string, n int, ok bool) {
	parts := strings.Split(v, ";")
	if len(parts) < 2 {
		return "", 0, false
	}
	name = strings.Trim(strings.TrimSpace(parts[0]), `"`)
	for _, p := range parts[1:] {
		if k, val, found := strings.Cut(strings.TrimSpace(p), "="); found && k == key {
			n, err := strconv.Atoi(val)
			return name, n, err == nil
		}
	}
	return "", 0, false
}
