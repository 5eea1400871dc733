// Package apiclient speaks the edge's public and admin API (docs/API.md) and
// nothing else: it is what an outside client sees. The fault matrix
// (chaos/) and other tools drive sales through it.
//
// It links no store client: the proof-of-work solver is package
// captcha/pow (standard library only).
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"seckill"
	"seckill/captcha/pow"
)

// Client talks to one edge. Base is swappable at run time (an edge restarted
// elsewhere); the admin token is needed only for the admin calls.
type Client struct {
	public     atomic.Pointer[string]
	admin      atomic.Pointer[string]
	AdminToken string
	HTTP       *http.Client
}

// New returns a client of the edge whose public API is at publicURL and
// admin API at adminURL (e.g. "http://127.0.0.1:8080").
func New(publicURL, adminURL, adminToken string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	c := &Client{AdminToken: adminToken, HTTP: hc}
	c.SetURLs(publicURL, adminURL)
	return c
}

// SetURLs points the client at another edge.
func (c *Client) SetURLs(publicURL, adminURL string) {
	p, a := strings.TrimRight(publicURL, "/"), strings.TrimRight(adminURL, "/")
	c.public.Store(&p)
	c.admin.Store(&a)
}

// Error is a refusal: an HTTP status with the problem's code. A transport
// failure (timeout, connection refused or reset) is not an *Error.
type Error struct {
	Status     int
	Code       string
	Detail     string
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
	OrderRef   string        // X-Order-Ref of a 409 already_bought
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Detail)
}

// AsError returns the *Error in err, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Answer is one answer, read in full (at most 1 MiB of body). Began is
// when the request was sent and Latency how long the answer took to arrive
// and be read; both are set on a transport failure too.
type Answer struct {
	Status  int
	Header  http.Header
	Body    []byte
	Began   time.Time
	Latency time.Duration
}

// Send sends method path to the public API with an optional Bearer token,
// JSON body (a []byte is sent as is, still as application/json) and extra
// headers (e.g. X-Forwarded-For), and returns the
// answer whatever its status; err is a transport failure.
func (c *Client) Send(ctx context.Context, method, path, bearer string, in any, hdr http.Header) (Answer, error) {
	return c.send(ctx, false, method, path, bearer, in, hdr)
}

func (c *Client) send(ctx context.Context, admin bool, method, path, bearer string, in any, hdr http.Header) (Answer, error) {
	base := *c.public.Load()
	if admin {
		base = *c.admin.Load()
	}
	var body io.Reader
	if raw, ok := in.([]byte); ok { // sent as is (e.g. a malformed body)
		body = bytes.NewReader(raw)
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return Answer{}, fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return Answer{}, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	a := Answer{Began: time.Now()}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		a.Latency = time.Since(a.Began)
		return a, err
	}
	a.Body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	a.Latency = time.Since(a.Began)
	if err != nil {
		return a, fmt.Errorf("reading %s %s: %w", method, path, err)
	}
	a.Status, a.Header = resp.StatusCode, resp.Header
	return a, nil
}

func (c *Client) do(ctx context.Context, admin bool, method, path, bearer string, in, out any, want ...int) error {
	return c.doH(ctx, admin, method, path, bearer, in, nil, out, want...)
}

// doH is do with extra request headers (X-Forwarded-For).
func (c *Client) doH(ctx context.Context, admin bool, method, path, bearer string, in any, hdr http.Header, out any, want ...int) error {
	a, err := c.send(ctx, admin, method, path, bearer, in, hdr)
	if err != nil {
		return err
	}
	for _, w := range want {
		if a.Status == w {
			if out != nil && len(a.Body) > 0 {
				if err := json.Unmarshal(a.Body, out); err != nil {
					return fmt.Errorf("decoding %s %s: %w", method, path, err)
				}
			}
			return nil
		}
	}
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(a.Body, &p)
	e := &Error{Status: a.Status, Code: p.Code, Detail: p.Detail, OrderRef: a.Header.Get("X-Order-Ref")}
	if s, err := strconv.Atoi(a.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// ItemSpec is what an admin sends to create an item.
type ItemSpec struct {
	Name       string    `json:"name"`
	PriceCents int64     `json:"price_cents"`
	Stock      int64     `json:"stock"`
	StartsAt   time.Time `json:"starts_at"`
	EndsAt     time.Time `json:"ends_at"`
	Challenge  string    `json:"challenge"` // pow, captcha or none
	// SaleRules: eligibility and allocation (JSON fields flat on the item).
	seckill.SaleRules
}

// Item is an item as the public API shows it.
type Item struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Stock     int64     `json:"stock"`
	StockLeft int64     `json:"stock_left"`
	State     string    `json:"state"`
	StartsAt  time.Time `json:"starts_at"`
	EndsAt    time.Time `json:"ends_at"`
	Challenge string    `json:"challenge"`
}

// CreateItem creates an item (admin).
func (c *Client) CreateItem(ctx context.Context, spec ItemSpec) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	err := c.do(ctx, true, http.MethodPost, "/admin/items", c.AdminToken, spec, &out, http.StatusCreated)
	return out.ID, err
}

// Stats are an item's counters (admin).
type Stats struct {
	StockTotal    int64    `json:"stock_total"`
	StockLeft     int64    `json:"stock_left"`
	Reserved      int64    `json:"reserved"`
	Orders        int64    `json:"orders"`
	OutboxPending int64    `json:"outbox_pending"`
	Failed        int64    `json:"failed"`
	ItemID        int64    `json:"item_id"`
	DefencesOff   []string `json:"defences_off"`
	// Queue: the waiting room of a sale with allocation queue (nil
	// otherwise).
	Queue *QueueStats `json:"queue,omitempty"`
}

// QueueStats is the waiting room in an item's stats (docs/API.md).
type QueueStats struct {
	Waiting           int64   `json:"waiting"`
	Admitted          int64   `json:"admitted"`       // admitted, unexpired, not holding a unit yet
	AdmittedTotal     int64   `json:"admitted_total"` // since the queue began
	UnitsLeft         int64   `json:"units_left"`
	NewUsersPerMinute int64   `json:"new_users_per_minute"`
	TotalActiveUsers  int64   `json:"total_active_users"`
	LoadFactor        float64 `json:"load_factor"`
}

// Stats returns an item's counters (admin).
func (c *Client) Stats(ctx context.Context, item int64) (Stats, error) {
	var s Stats
	err := c.do(ctx, true, http.MethodGet, "/admin/items/"+strconv.FormatInt(item, 10)+"/stats", c.AdminToken, nil, &s, http.StatusOK)
	return s, err
}

// SetDefences switches an item's defences on or off (admin; PUT
// /admin/items/{id}/defences, e.g. {"pow": false}).
func (c *Client) SetDefences(ctx context.Context, item int64, defences map[string]bool) error {
	return c.do(ctx, true, http.MethodPut, "/admin/items/"+strconv.FormatInt(item, 10)+"/defences", c.AdminToken, defences, nil, http.StatusOK, http.StatusNoContent)
}

// sessionsBatch is the most names Sessions asks for in one call: the edge
// takes up to 10,000, but the answer must fit the client's 1 MiB body limit
// (a name and its session token, with the account's age, take about 230 bytes).
const sessionsBatch = 2000

// Sessions returns a session token per username, creating missing users
// (admin; sessionsBatch names per call).
func (c *Client) Sessions(ctx context.Context, usernames []string) (map[string]string, error) {
	out := map[string]string{}
	for len(usernames) > 0 {
		n := min(len(usernames), sessionsBatch)
		var r struct {
			Tokens map[string]string `json:"tokens"`
		}
		if err := c.do(ctx, true, http.MethodPost, "/admin/sessions", c.AdminToken, map[string]any{"usernames": usernames[:n]}, &r, http.StatusOK); err != nil {
			return nil, err
		}
		for k, v := range r.Tokens {
			out[k] = v
		}
		usernames = usernames[n:]
	}
	return out, nil
}

// Register creates a user with a password: it asks for a registration
// challenge, solves it (a proof of work, with package captcha/pow) and
// registers with the answer (docs/API.md "Registration"). An edge that
// asks for a captcha is refused here with an error naming it (read the
// image and use RegisterChallenge and RegisterAnswer).
func (c *Client) Register(ctx context.Context, username, password string) (int64, error) {
	return c.RegisterFrom(ctx, username, password, nil)
}

// RegisterFrom is Register sending hdr with both requests (for example
// X-Forwarded-For, which an edge believes only from a trusted proxy: the
// lab plays every user from its own address that way). The challenge is
// bound to the network the edge sees, so both requests must come from
// the same /24 (IPv6 /48).
func (c *Client) RegisterFrom(ctx context.Context, username, password string, hdr http.Header) (int64, error) {
	ch, err := c.RegisterChallenge(ctx, hdr)
	if err != nil {
		return 0, err
	}
	if ch.Kind != "pow" {
		return 0, fmt.Errorf("registering %q: the edge asks for a %s, which this client cannot read (RegisterChallenge, RegisterAnswer)", username, ch.Kind)
	}
	return c.RegisterAnswer(ctx, username, password, ch.ID, SolveRegistration(ch), hdr)
}

// RegistrationChallenge is the answer of POST /api/register/challenge.
type RegistrationChallenge struct {
	ID         string    `json:"challenge_id"`
	Kind       string    `json:"kind"` // pow or captcha
	ExpiresAt  time.Time `json:"expires_at"`
	Seed       string    `json:"seed"`       // pow
	Difficulty int       `json:"difficulty"` // pow: leading zero bits
	Image      string    `json:"image"`      // captcha: a data:image/png;base64 URL
}

// RegisterChallenge asks for a registration challenge (bound to the
// network the edge sees the request from), sending hdr.
func (c *Client) RegisterChallenge(ctx context.Context, hdr http.Header) (RegistrationChallenge, error) {
	var ch RegistrationChallenge
	err := c.doH(ctx, false, http.MethodPost, "/api/register/challenge", "", nil, hdr, &ch, http.StatusOK)
	return ch, err
}

// RegisterAnswer registers with a challenge's id and answer, sending hdr;
// it returns the new account's id. A wrong, reused, expired or foreign
// answer is a 400 challenge_failed *Error; an exhausted account budget a
// 429 rate_limited with RetryAfter.
func (c *Client) RegisterAnswer(ctx context.Context, username, password, challengeID, answer string, hdr http.Header) (int64, error) {
	var out struct {
		UserID int64 `json:"user_id"`
	}
	body := map[string]string{"username": username, "password": password, "challenge_id": challengeID, "answer": answer}
	err := c.doH(ctx, false, http.MethodPost, "/api/register", "", body, hdr, &out, http.StatusCreated)
	return out.UserID, err
}

// SolveRegistration answers a registration challenge: a proof of work is
// solved; a captcha cannot be (the answer is "0" and will be refused).
func SolveRegistration(ch RegistrationChallenge) string {
	return Solve(Challenge{ID: ch.ID, Kind: ch.Kind, Seed: ch.Seed, Difficulty: ch.Difficulty})
}

// Login returns a session token.
func (c *Client) Login(ctx context.Context, username, password string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := c.do(ctx, false, http.MethodPost, "/api/login", "", map[string]string{"username": username, "password": password}, &out, http.StatusOK)
	return out.Token, err
}

// Item returns one item.
func (c *Client) Item(ctx context.Context, id int64) (Item, error) {
	var out struct {
		Item Item `json:"item"`
	}
	err := c.do(ctx, false, http.MethodGet, "/api/items/"+strconv.FormatInt(id, 10), "", nil, &out, http.StatusOK)
	return out.Item, err
}

// Challenge is a human challenge handed out before a path.
type Challenge struct {
	ID         string `json:"challenge_id"`
	Kind       string `json:"kind"`
	Seed       string `json:"seed"`
	Difficulty int    `json:"difficulty"`
}

// Challenge asks for a challenge of an item.
func (c *Client) Challenge(ctx context.Context, token string, item int64) (Challenge, error) {
	var ch Challenge
	err := c.do(ctx, false, http.MethodPost, "/api/items/"+strconv.FormatInt(item, 10)+"/challenge", token, nil, &ch, http.StatusOK)
	return ch, err
}

// Path answers a challenge and returns the hidden purchase path.
func (c *Client) Path(ctx context.Context, token string, item int64, challengeID, answer string) (string, error) {
	var out struct {
		Path string `json:"path"`
	}
	err := c.do(ctx, false, http.MethodPost, "/api/items/"+strconv.FormatInt(item, 10)+"/path", token,
		map[string]string{"challenge_id": challengeID, "answer": answer}, &out, http.StatusOK)
	return out.Path, err
}

// Buy sends the purchase on a path; a 202 returns the order ref.
func (c *Client) Buy(ctx context.Context, token string, item int64, path string) (string, error) {
	var out struct {
		OrderRef string `json:"order_ref"`
	}
	err := c.do(ctx, false, http.MethodPost, "/api/items/"+strconv.FormatInt(item, 10)+"/buy/"+url.PathEscape(path), token, nil, &out, http.StatusAccepted)
	return out.OrderRef, err
}

// Order is the caller's own order of an item.
type Order struct {
	Status   string `json:"status"`
	OrderRef string `json:"order_ref"`
	OrderID  int64  `json:"order_id"`
}

// Order polls the caller's order of an item.
func (c *Client) Order(ctx context.Context, token string, item int64) (Order, error) {
	var o Order
	err := c.do(ctx, false, http.MethodGet, "/api/items/"+strconv.FormatInt(item, 10)+"/order", token, nil, &o, http.StatusOK)
	return o, err
}

// Healthy reports whether GET path (e.g. "/healthz") on the admin listener
// answers 200.
func (c *Client) Healthy(ctx context.Context, path string) bool {
	return c.do(ctx, true, http.MethodGet, path, "", nil, nil, http.StatusOK) == nil
}

// Solve answers a challenge: a proof of work is solved; a captcha cannot be
// (the answer is "0" and will be refused).
func Solve(ch Challenge) string {
	if ch.Kind != "pow" {
		return "0"
	}
	return pow.Solve(ch.Seed, ch.Difficulty)
}

// WithHTTP returns a client of the same edge (its current URLs) that sends
// through hc.
func (c *Client) WithHTTP(hc *http.Client) *Client {
	return New(*c.public.Load(), *c.admin.Load(), c.AdminToken, hc)
}
