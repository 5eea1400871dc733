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

	"seckill/apiclient"
)

// edgeClient talks to the edge's public and admin APIs (docs/API.md)
// through apiclient, and to the backend API (docs/BACKEND_API.md), over one
// keep-alive client. do stays for the raw probes of the wrk scenarios.
type edgeClient struct {
	hc           *http.Client
	api          *apiclient.Client
	public       string // base URL of the public API
	admin        string // base URL of the admin API
	adminToken   string
	backend      string // base URL of the backend API (chain only)
	backendToken string
}

func newEdgeClient(public, admin, adminToken string) *edgeClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 64, 64
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return &edgeClient{
		hc: hc, api: apiclient.New(public, admin, adminToken, hc),
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
	id, err := c.api.CreateItem(ctx, apiclient.ItemSpec{Name: name, PriceCents: 100, Stock: stock,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(24 * time.Hour), Challenge: challenge})
	if err != nil {
		return 0, fmt.Errorf("POST /admin/items: %w", err)
	}
	return id, nil
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
	id, err := c.api.CreateItem(ctx, apiclient.ItemSpec{Name: "bench challenge probe " + randomHex(4), PriceCents: 100, Stock: 1,
		StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), Challenge: want})
	if err != nil {
		return "", fmt.Errorf("POST /admin/items: %w", err)
	}
	toks, err := c.sessions(ctx, []string{"bench-probe-" + randomHex(4)})
	if err != nil {
		return "", err
	}
	_, err = c.api.Challenge(ctx, toks[0], id)
	if err == nil {
		return want, nil
	}
	e := apiclient.AsError(err)
	if e == nil {
		return "", err
	}
	progress("WARNING: this edge refuses the challenge of an item created with challenge \"none\": %s (%s); "+
		"docs/API.md promises a pow challenge of difficulty 0. Using challenge \"pow\" items instead (solved untimed).", statusCode(e), e.Detail)
	return "pow", nil
}

// statusCode shows a refusal as "status code" (as reply.String does).
func statusCode(e *apiclient.Error) string {
	if e.Code != "" {
		return fmt.Sprintf("%d %s", e.Status, e.Code)
	}
	return strconv.Itoa(e.Status)
}

// sessions returns a session token for each name (POST /admin/sessions,
// 10,000 names per call at most), in the order of names.
func (c *edgeClient) sessions(ctx context.Context, names []string) ([]string, error) {
	m, err := c.api.Sessions(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("POST /admin/sessions: %w", err)
	}
	return inOrder(names, m, "POST /admin/sessions: no token for %q")
}

// inOrder returns m's value of each name, in the order of names; a missing
// name is an error (format missing, with the name).
func inOrder[V any](names []string, m map[string]V, missing string) ([]V, error) {
	out := make([]V, 0, len(names))
	for _, name := range names {
		v, ok := m[name]
		if !ok {
			return nil, fmt.Errorf(missing, name)
		}
		out = append(out, v)
	}
	return out, nil
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
		got, err := inOrder(names[:n], out.Users, "POST /v1/admin/users: no id for %q")
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
		names = names[n:]
	}
	return ids, nil
}

// retryAfter is the wait a 429 or 503 asks for (at least 100 ms).
func retryAfter(e *apiclient.Error) time.Duration {
	if e.RetryAfter > 0 {
		return e.RetryAfter
	}
	return 100 * time.Millisecond
}

// retry runs f again while it is refused with 429 or 503 (a few times),
// waiting what the refusal asks for.
func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		v, err := f()
		e := apiclient.AsError(err)
		if e == nil || (e.Status != http.StatusTooManyRequests && e.Status != http.StatusServiceUnavailable) || attempt == 5 {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(retryAfter(e)):
		}
	}
}

// preparePath runs challenge -> solve -> path for one user and item and
// returns the hidden purchase path.
func (c *edgeClient) preparePath(ctx context.Context, itemID int64, token string) (string, error) {
	base := "/api/items/" + strconv.FormatInt(itemID, 10)
	ch, err := retry(ctx, func() (apiclient.Challenge, error) { return c.api.Challenge(ctx, token, itemID) })
	if err != nil {
		return "", fmt.Errorf("POST %s/challenge: %w", base, err)
	}
	if ch.Kind != "pow" {
		return "", fmt.Errorf("challenge kind %q: only pow can be solved here (create the item with challenge none or pow)", ch.Kind)
	}
	answer := apiclient.Solve(ch)
	p, err := retry(ctx, func() (string, error) { return c.api.Path(ctx, token, itemID, ch.ID, answer) })
	if err != nil {
		return "", fmt.Errorf("POST %s/path: %w", base, err)
	}
	return p, nil
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
	if _, err := retry(ctx, func() (string, error) { return c.api.Buy(ctx, token, itemID, p) }); err != nil {
		return fmt.Errorf("POST %s: %w (want 202)", c.buyURL(itemID, "PATH"), err)
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
