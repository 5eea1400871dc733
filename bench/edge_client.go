package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"seckill/captcha/pow"
)

// edgeClient talks to the edge's public and admin APIs (docs/API.md) and
// to the backend API (docs/BACKEND_API.md) over one keep-alive client.
type edgeClient struct {
	hc           *http.Client
	public       string // base URL of the public API
	admin        string // base URL of the admin API
	adminToken   string
	backend      string // base URL of the backend API (chain only)
	backendToken string
}

func newEdgeClient(public, admin, adminToken string) *edgeClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 64, 64
	return &edgeClient{
		hc:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		public: strings.TrimRight(public, "/"), admin: strings.TrimRight(admin, "/"), adminToken: adminToken,
	}
}

func (c *edgeClient) close() { c.hc.CloseIdleConnections() }

// reply is one HTTP answer, read in full.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// code is the problem code of an error answer ("" otherwise).
func (r reply) code() string {
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(r.Body, &p)
	return p.Code
}

func (r reply) String() string {
	if c := r.code(); c != "" {
		return fmt.Sprintf("%d %s", r.Status, c)
	}
	return strconv.Itoa(r.Status)
}

// do sends a request with an optional Bearer token and JSON body and reads
// the whole answer.
func (c *edgeClient) do(ctx context.Context, method, url, token string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// call is do that wants status want and decodes the body into out.
func (c *edgeClient) call(ctx context.Context, method, url, token string, body any, want int, out any) error {
	r, err := c.do(ctx, method, url, token, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	if r.Status != want {
		return fmt.Errorf("%s %s: %s (want %d): %s", method, url, r, want, bytes.TrimSpace(r.Body))
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, url, err)
		}
	}
	return nil
}

// createItem creates a live item through the admin API (challenge "none"
// is a pow challenge of difficulty 0, so any answer passes).
func (c *edgeClient) createItem(ctx context.Context, name string, stock int64, challenge string) (int64, error) {
	now := time.Now().UTC()
	var out struct {
		ID int64 `json:"id"`
	}
	err := c.call(ctx, http.MethodPost, c.admin+"/admin/items", c.adminToken, map[string]any{
		"name": name, "price_cents": 100, "stock": stock,
		"starts_at": now.Add(-time.Minute), "ends_at": now.Add(24 * time.Hour), "challenge": challenge,
	}, http.StatusCreated, &out)
	return out.ID, err
}

// challengeKind returns the challenge kind to create buyable items with:
// want, unless want is "none" and this edge refuses to issue its
// difficulty-0 challenge (400 invalid), in which case it warns and
// returns "pow" (solved here: the figures do not include the solving).
func (c *edgeClient) challengeKind(ctx context.Context, want string, progress func(string, ...any)) (string, error) {
	if want != "none" {
		return want, nil
	}
	now := time.Now().UTC()
	var out struct {
		ID int64 `json:"id"`
	}
	if err := c.call(ctx, http.MethodPost, c.admin+"/admin/items", c.adminToken, map[string]any{
		"name": "bench challenge probe " + randomHex(4), "price_cents": 100, "stock": 1,
		"starts_at": now.Add(-time.Minute), "ends_at": now.Add(time.Hour), "challenge": want,
	}, http.StatusCreated, &out); err != nil {
		return "", err
	}
	toks, err := c.sessions(ctx, []string{"bench-probe-" + randomHex(4)})
	if err != nil {
		return "", err
	}
	r, err := c.do(ctx, http.MethodPost, c.public+"/api/items/"+strconv.FormatInt(out.ID, 10)+"/challenge", toks[0], nil)
	if err != nil {
		return "", err
	}
	if r.Status == http.StatusOK {
		return want, nil
	}
	var p struct {
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(r.Body, &p)
	progress("WARNING: this edge refuses the challenge of an item created with challenge \"none\": %s (%s); "+
		"docs/API.md promises a pow challenge of difficulty 0. Using challenge \"pow\" items instead (solved untimed).", r, p.Detail)
	return "pow", nil
}

// sessions returns a session token for each name (POST /admin/sessions,
// 10,000 names per call at most), in the order of names.
func (c *edgeClient) sessions(ctx context.Context, names []string) ([]string, error) {
	toks := make([]string, 0, len(names))
	for len(names) > 0 {
		n := min(len(names), 10000)
		var out struct {
			Tokens map[string]string `json:"tokens"`
		}
		if err := c.call(ctx, http.MethodPost, c.admin+"/admin/sessions", c.adminToken,
			map[string]any{"usernames": names[:n]}, http.StatusOK, &out); err != nil {
			return nil, err
		}
		for _, name := range names[:n] {
			t, ok := out.Tokens[name]
			if !ok {
				return nil, fmt.Errorf("POST /admin/sessions: no token for %q", name)
			}
			toks = append(toks, t)
		}
		names = names[n:]
	}
	return toks, nil
}

// backendUsers returns the user id of each name (POST /v1/admin/users on
// the backend, created when missing), in the order of names.
func (c *edgeClient) backendUsers(ctx context.Context, names []string) ([]int64, error) {
	ids := make([]int64, 0, len(names))
	for len(names) > 0 {
		n := min(len(names), 10000)
		var out struct {
			Users map[string]int64 `json:"users"`
		}
		if err := c.call(ctx, http.MethodPost, c.backend+"/v1/admin/users", c.backendToken,
			map[string]any{"usernames": names[:n]}, http.StatusOK, &out); err != nil {
			return nil, err
		}
		for _, name := range names[:n] {
			id, ok := out.Users[name]
			if !ok {
				return nil, fmt.Errorf("POST /v1/admin/users: no id for %q", name)
			}
			ids = append(ids, id)
		}
		names = names[n:]
	}
	return ids, nil
}

// retryAfter is the wait a 429 or 503 asks for (at least 100 ms).
func retryAfter(r reply) time.Duration {
	if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 100 * time.Millisecond
}

// doRetry is do that waits and retries on 429 and 503 (a few times).
func (c *edgeClient) doRetry(ctx context.Context, method, url, token string, body any) (reply, error) {
	for attempt := 0; ; attempt++ {
		r, err := c.do(ctx, method, url, token, body)
		if err != nil || (r.Status != http.StatusTooManyRequests && r.Status != http.StatusServiceUnavailable) || attempt == 5 {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(retryAfter(r)):
		}
	}
}

// preparePath runs challenge -> solve -> path for one user and item and
// returns the hidden purchase path.
func (c *edgeClient) preparePath(ctx context.Context, itemID int64, token string) (string, error) {
	base := c.public + "/api/items/" + strconv.FormatInt(itemID, 10)
	r, err := c.doRetry(ctx, http.MethodPost, base+"/challenge", token, nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("POST %s/challenge: %s", base, r)
	}
	var ch struct {
		ID         string `json:"challenge_id"`
		Kind       string `json:"kind"`
		Seed       string `json:"seed"`
		Difficulty int    `json:"difficulty"`
	}
	if err := json.Unmarshal(r.Body, &ch); err != nil {
		return "", err
	}
	if ch.Kind != "pow" {
		return "", fmt.Errorf("challenge kind %q: only pow can be solved here (create the item with challenge none or pow)", ch.Kind)
	}
	r, err = c.doRetry(ctx, http.MethodPost, base+"/path", token,
		map[string]any{"challenge_id": ch.ID, "answer": pow.Solve(ch.Seed, ch.Difficulty)})
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("POST %s/path: %s", base, r)
	}
	var p struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		return "", err
	}
	return p.Path, nil
}

// buyURL is the purchase URL of an item and path.
func (c *edgeClient) buyURL(itemID int64, path string) string {
	return c.public + "/api/items/" + strconv.FormatInt(itemID, 10) + "/buy/" + path
}

// purchase buys one unit through the whole public flow; it wants 202.
func (c *edgeClient) purchase(ctx context.Context, itemID int64, token string) error {
	p, err := c.preparePath(ctx, itemID, token)
	if err != nil {
		return err
	}
	r, err := c.doRetry(ctx, http.MethodPost, c.buyURL(itemID, p), token, nil)
	if err != nil {
		return err
	}
	if r.Status != http.StatusAccepted {
		return fmt.Errorf("POST %s: %s (want 202)", c.buyURL(itemID, "PATH"), r)
	}
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var errNoWrk = errors.New("wrk not found: install it (apt-get install wrk) or pass --wrk")
