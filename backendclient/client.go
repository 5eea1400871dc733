// Package backendclient calls the purchase backend's HTTP API
// (docs/BACKEND_API.md). It speaks the contract of package seckill and
// links nothing of the backend's stores, so the edge and tools use it
// without Redis, RabbitMQ or PostgreSQL code.
package backendclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"seckill"
)

// Client calls the backend API over HTTP. Business answers (4xx with a
// code) come back as *seckill.Error; anything else (network error, 5xx,
// garbage) as *seckill.UnavailableError, which callers such as a circuit
// breaker count as a failure of the backend. An already_bought answer
// comes back as *seckill.HeldError naming the order held.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the backend at base (e.g.
// "http://127.0.0.1:8090"). hc may be nil.
func New(base, adminToken string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second,
			},
		}
	}
	return &Client{base: base, token: adminToken, hc: hc}
}

// Base returns the backend's base URL.
func (c *Client) Base() string { return c.base }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return &seckill.UnavailableError{Err: err}
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &seckill.UnavailableError{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return &seckill.UnavailableError{Err: err}
	}
	if resp.StatusCode >= 500 {
		var p struct {
			Code seckill.Code `json:"code"`
		}
		_ = json.Unmarshal(raw, &p)
		if resp.StatusCode == http.StatusServiceUnavailable && p.Code == seckill.EOverloaded {
			// The backend shed the call before doing it (its password
			// hashing bound): it answered, so this is no failure of it,
			// and no breaker counts it. The caller's 503 says
			// Retry-After: 1, as the backend's did.
			return seckill.Errorf(seckill.EOverloaded, "the backend is busy; retry shortly")
		}
		return &seckill.UnavailableError{Err: fmt.Errorf("%s %s: status %d %s", method, path, resp.StatusCode, p.Code)}
	}
	if resp.StatusCode >= 400 {
		var p struct {
			Code   seckill.Code `json:"code"`
			Detail string       `json:"detail"`
		}
		if json.Unmarshal(raw, &p) != nil || p.Code == "" {
			return &seckill.UnavailableError{Err: fmt.Errorf("%s %s: status %d without a problem body", method, path, resp.StatusCode)}
		}
		if p.Code == seckill.EUnauthorized {
			// The backend refused our internal credential: a configuration
			// fault of this deployment, not an answer for the shopper.
			return &seckill.UnavailableError{Err: fmt.Errorf("%s %s: the backend refused the internal credential (--backend-token)", method, path)}
		}
		e := &seckill.Error{Code: p.Code, Message: p.Detail}
		if ref := resp.Header.Get("X-Order-Ref"); ref != "" {
			return &seckill.HeldError{Err: e, OrderRef: ref}
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return &seckill.UnavailableError{Err: fmt.Errorf("%s %s: decoding answer: %w", method, path, err)}
		}
	}
	return nil
}

// Reserve calls POST /v1/reservations for an account (its id, and the
// creation time and network eligibility checks).
func (c *Client) Reserve(ctx context.Context, itemID int64, acct seckill.Account, requestID string) (seckill.Reservation, error) {
	var r seckill.Reservation
	err := c.do(ctx, http.MethodPost, "/v1/reservations", reserveRequest{ItemID: itemID, UserID: acct.ID, RequestID: requestID,
		AccountCreatedAt: acct.CreatedAt, Network: acct.Network}, &r)
	return r, err
}

// Status calls GET /v1/items/{id}/orders/{user}.
func (c *Client) Status(ctx context.Context, itemID, userID int64) (seckill.OrderState, error) {
	var s seckill.OrderState
	err := c.do(ctx, http.MethodGet, "/v1/items/"+strconv.FormatInt(itemID, 10)+"/orders/"+strconv.FormatInt(userID, 10), nil, &s)
	return s, err
}

// Items calls GET /v1/items.
func (c *Client) Items(ctx context.Context) ([]seckill.ItemView, error) {
	var out struct {
		Items []seckill.ItemView `json:"items"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/items", nil, &out)
	return out.Items, err
}

// Item calls GET /v1/items/{id}.
func (c *Client) Item(ctx context.Context, id int64) (seckill.ItemView, error) {
	var out struct {
		Item seckill.ItemView `json:"item"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/items/"+strconv.FormatInt(id, 10), nil, &out)
	return out.Item, err
}

// CreateItem calls POST /v1/admin/items.
func (c *Client) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	var out struct {
		Item seckill.Item `json:"item"`
	}
	req := seckill.CreateItemRequest{Name: it.Name, PriceCents: it.PriceCents, Stock: it.Stock, StartsAt: it.StartsAt, EndsAt: it.EndsAt, Challenge: it.Challenge, SaleRules: it.SaleRules}
	err := c.do(ctx, http.MethodPost, "/v1/admin/items", req, &out)
	return out.Item, err
}

// Stats calls GET /v1/admin/items/{id}/stats.
func (c *Client) Stats(ctx context.Context, id int64) (seckill.Stats, error) {
	var st seckill.Stats
	err := c.do(ctx, http.MethodGet, "/v1/admin/items/"+strconv.FormatInt(id, 10)+"/stats", nil, &st)
	return st, err
}

// Register calls POST /v1/users; network is the /24 or /48 the client
// registered from (kept on the account).
func (c *Client) Register(ctx context.Context, username, password, network string) (int64, error) {
	var out struct {
		UserID int64 `json:"user_id"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/users", credentials{Username: username, Password: password, Network: network}, &out)
	return out.UserID, err
}

// Login calls POST /v1/users/login: the account, with its creation time
// and network (zero and "" from a backend older than these fields: the
// session then counts as unknown for sales with eligibility rules).
func (c *Client) Login(ctx context.Context, username, password string) (seckill.Account, error) {
	var out seckill.Account
	err := c.do(ctx, http.MethodPost, "/v1/users/login", credentials{Username: username, Password: password}, &out)
	return out, err
}

// EnsureUsers calls POST /v1/admin/users: every named account with its
// creation time and network (an older backend answers ids only: the
// accounts are then unknown, CreatedAt zero).
func (c *Client) EnsureUsers(ctx context.Context, usernames []string) (map[string]seckill.Account, error) {
	var out struct {
		Users    map[string]int64           `json:"users"`
		Accounts map[string]seckill.Account `json:"accounts"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/admin/users", map[string]any{"usernames": usernames}, &out)
	if err != nil {
		return nil, err
	}
	accts := make(map[string]seckill.Account, len(out.Users))
	for name, id := range out.Users {
		a := out.Accounts[name]
		if a.ID != id {
			a = seckill.Account{ID: id}
		}
		accts[name] = a
	}
	return accts, nil
}

// reserveRequest is the body of POST /v1/reservations.
type reserveRequest struct {
	ItemID           int64     `json:"item_id"`
	UserID           int64     `json:"user_id"`
	RequestID        string    `json:"request_id"`
	AccountCreatedAt time.Time `json:"account_created_at,omitzero"`
	Network          string    `json:"network,omitempty"`
}

// credentials is the body of POST /v1/users and /v1/users/login.
type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Network  string `json:"network,omitempty"` // registration only
}

// Ready calls GET /readyz.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil)
}
