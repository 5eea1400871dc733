package lab

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"seckill/apiclient"
)

// Record is the outcome of one request.
type Record struct {
	Actor   string        `json:"actor"`
	Route   string        `json:"route"` // challenge, path, buy, order, item, stats
	Status  int           `json:"status"`
	Code    string        `json:"code,omitempty"` // problem code, or error:... for transport errors
	Rule    string        `json:"rule,omitempty"` // the token bucket named by a 429
	Latency time.Duration `json:"latency_ns"`
	At      time.Duration `json:"at_ns"` // since the sale started
}

// Outcome is "202", "403 bad_path", "error:timeout".
func (r Record) Outcome() string {
	if r.Status == 0 {
		return r.Code
	}
	if r.Code == "" {
		return strconv.Itoa(r.Status)
	}
	return strconv.Itoa(r.Status) + " " + r.Code
}

// recorder collects records.
type recorder struct {
	mu    sync.Mutex
	start time.Time
	recs  []Record
}

func (r *recorder) add(rec Record) {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[:len(r.recs):len(r.recs)]
}

// reply is an answer of the edge.
type reply struct {
	status int
	body   map[string]any
	header http.Header
	err    error
}

func (a reply) code() string { s, _ := a.body["code"].(string); return s }
func (a reply) str(k string) string {
	s, _ := a.body[k].(string)
	return s
}
func (a reply) num(k string) float64 { f, _ := a.body[k].(float64); return f }

// retryAfter is the Retry-After of a 429/503 (at least 100 ms, at most 10 s).
func (a reply) retryAfter() time.Duration {
	d := time.Second
	if v := a.header.Get("Retry-After"); v != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			d = time.Duration(n) * time.Second
		}
	} else if n, ok := a.body["retry_after"].(float64); ok {
		d = time.Duration(n * float64(time.Second))
	}
	return min(max(d, 100*time.Millisecond), 10*time.Second)
}

// client sends requests to the edge (through apiclient) and records each
// outcome of the public API.
type client struct {
	api *apiclient.Client
	rec *recorder
}

func newHTTPClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// actor is one client identity: a session and an address.
type actor struct {
	kind  string
	name  string
	token string
	ip    string // X-Forwarded-For, "" for none
	// pass: the admission pass of a waiting room (queue.go), sent as
	// X-Admission-Pass while it is valid.
	pass      string
	passUntil time.Time
	// passItem: the sale the pass is for (r.itemURL). The population's
	// actors play every seed's sale; a pass of the last sale, still valid
	// when the next one opens 5 s later, made them skip the next room and
	// spend their attempts on 409 not_live and not_admitted.
	passItem string
	// pollToken: the waiting room's poll_token of the last answer, sent
	// back as X-Queue-Token with each poll (as the storefront's cookie):
	// the edge answers such a poll from its view, without Redis.
	pollToken string
}

func (c *client) do(ctx context.Context, a *actor, route, method, path string, body any) reply {
	return c.doIP(ctx, a, a.ip, route, method, path, body)
}

func (c *client) doIP(ctx context.Context, a *actor, ip, route, method, path string, body any) reply {
	var hdr http.Header
	if ip != "" {
		hdr = http.Header{"X-Forwarded-For": {ip}}
	}
	if a.pass != "" {
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Admission-Pass", a.pass)
	}
	if route == "queue_poll" && a.pollToken != "" {
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Queue-Token", a.pollToken)
	}
	ans, err := c.api.Send(ctx, method, path, a.token, body, hdr)
	rec := Record{Actor: a.kind, Route: route, At: ans.Began.Sub(c.rec.start), Latency: ans.Latency}
	if err != nil {
		if ans.Began.IsZero() || ctx.Err() != nil { // not sent, or the lab stopped: not an outcome of the edge
			return reply{err: err}
		}
		rec.Code = "error:" + errKind(err)
		c.rec.add(rec)
		return reply{err: err}
	}
	rep := reply{status: ans.Status, header: ans.Header, body: map[string]any{}}
	_ = json.Unmarshal(ans.Body, &rep.body)
	rec.Status, rec.Code = rep.status, rep.code()
	if rep.status == http.StatusTooManyRequests {
		rec.Rule = ruleOf(rep)
	}
	c.rec.add(rec)
	return rep
}

// ruleOf names the token bucket a 429 came from: the detail says "(name)";
// otherwise the first RateLimit-Policy item.
func ruleOf(a reply) string {
	d := a.str("detail")
	if i := strings.Index(d, "("); i >= 0 {
		if j := strings.Index(d[i:], ")"); j > 0 {
			return d[i+1 : i+j]
		}
	}
	p := a.header.Get("RateLimit-Policy")
	if strings.HasPrefix(p, `"`) {
		if j := strings.Index(p[1:], `"`); j >= 0 {
			return p[1 : 1+j]
		}
	}
	return ""
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	case strings.Contains(err.Error(), "connection reset"), strings.Contains(err.Error(), "EOF"):
		return "reset"
	default:
		return "transport"
	}
}

// Stats is GET /admin/items/{id}/stats.
type Stats = apiclient.Stats

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
