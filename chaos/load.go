package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"seckill/apiclient"
)

// LoadConfig shapes the buyers of one sale.
type LoadConfig struct {
	Buyers      int           // distinct users, one attempt each
	Concurrency int           // buyers in flight at once
	Rate        float64       // buyers arriving per second
	Timeout     time.Duration // one request's client timeout
	Deadline    time.Duration // a buyer gives up after this long
}

// Outcome is how one buyer's attempt ended.
type Outcome int

const (
	OutNone          Outcome = iota
	OutAccepted              // told 202 (or 409 already_bought with its order ref)
	OutSoldOut               // 410
	OutGaveUp                // deadline passed with only clear refusals
	OutIndeterminate         // deadline passed after a timeout, a cut connection or an ambiguous 5xx
)

// Buyer is one user's history.
type Buyer struct {
	Name      string
	Told      []string // order refs the user was told (202 or X-Order-Ref of a 409)
	Ambiguous bool     // a buy ended with no answer (client timeout, connection cut)
	Outcome   Outcome
}

// Event is one answer to a buy, for rates over time.
type Event struct {
	At     time.Time
	Status int // 0: no answer (transport error)
	Code   string
}

// History is everything the buyers saw.
type History struct {
	mu       sync.Mutex
	Buyers   []*Buyer
	Buys     []Event // every buy answer, in arrival order
	Accepted []time.Time
	Internal int            // 500 answers on any route
	Slow     int            // requests with no answer within the client timeout
	Wrong    int            // other wrong answers: 404 unknown_item for the live item, a 5xx without Retry-After
	Statuses map[string]int // "route status code" -> count
	Started  time.Time
	accepted atomic.Int64
}

func (h *History) note(route string, err error, t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := route + " ok"
	if e := apiclient.AsError(err); e != nil {
		key = fmt.Sprintf("%s %d %s", route, e.Status, e.Code)
		switch {
		case e.Status == http.StatusInternalServerError:
			h.Internal++
		case e.Code == "unknown_item", e.Status >= 500 && e.RetryAfter == 0:
			h.Wrong++
		}
	} else if err != nil {
		key = route + " no-answer"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			h.Slow++
			key = route + " timeout"
		}
	}
	h.Statuses[key]++
	if route == "buy" {
		st, code := 0, ""
		if e := apiclient.AsError(err); e != nil {
			st, code = e.Status, e.Code
		} else if err == nil {
			st = http.StatusAccepted
			h.Accepted = append(h.Accepted, t)
		}
		h.Buys = append(h.Buys, Event{At: t, Status: st, Code: code})
	}
}

// AddBuyer adds a buyer driven outside Drive (a row's own requests).
func (h *History) AddBuyer(b *Buyer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Buyers = append(h.Buyers, b)
}

// AcceptedCount is the number of 202s so far.
func (h *History) AcceptedCount() int64 { return h.accepted.Load() }

// AcceptedTimes returns a copy of the 202 times.
func (h *History) AcceptedTimes() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.Accepted...)
}

// Drive runs the buyers of item against the API until every buyer has an
// outcome. tokens holds a session per buyer name.
func Drive(ctx context.Context, api *apiclient.Client, item int64, names []string, tokens map[string]string, cfg LoadConfig, h *History) {
	h.mu.Lock()
	h.Statuses = map[string]int{}
	h.Started = time.Now()
	buyers := make([]*Buyer, len(names))
	for i, n := range names {
		buyers[i] = &Buyer{Name: n}
	}
	h.Buyers = append(h.Buyers, buyers...)
	h.mu.Unlock()
	hc := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency * 2, MaxConnsPerHost: cfg.Concurrency * 4}}
	c := api.WithHTTP(hc) // same URLs, own transport
	queue := make(chan *Buyer)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range queue {
				buy(ctx, c, item, b, tokens[b.Name], cfg, h)
			}
		}()
	}
	gap := time.Duration(float64(time.Second) / cfg.Rate)
	next := time.Now()
	for _, b := range buyers {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(gap)
		select {
		case queue <- b:
		case <-ctx.Done():
		}
	}
	close(queue)
	wg.Wait()
	hc.CloseIdleConnections()
}

func pause(ctx context.Context, err error) {
	d := 100 * time.Millisecond
	if e := apiclient.AsError(err); e != nil && e.RetryAfter > 0 {
		d = min(e.RetryAfter, time.Second) // honoured, capped so a run stays short
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// buy is one buyer: challenge, solve, path, buy; retries what the API says
// may be retried (the same path after a 429/503 or no answer: the path is
// the purchase's idempotency key) until a final answer or the deadline.
func buy(ctx context.Context, c *apiclient.Client, item int64, b *Buyer, token string, cfg LoadConfig, h *History) {
	deadline := time.Now().Add(cfg.Deadline)
	path := ""
	told := func(ref string) {
		b.Told = append(b.Told, ref)
		b.Outcome = OutAccepted
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if path == "" {
			ch, err := c.Challenge(ctx, token, item)
			h.note("challenge", err, time.Now())
			if err != nil {
				if e := apiclient.AsError(err); e != nil {
					switch {
					case e.Status == http.StatusGone:
						b.Outcome = OutSoldOut
						return
					case e.Code == "already_bought" && e.OrderRef != "":
						told(e.OrderRef)
						return
					}
				}
				pause(ctx, err)
				continue
			}
			p, err := c.Path(ctx, token, item, ch.ID, apiclient.Solve(ch))
			h.note("path", err, time.Now())
			if err != nil {
				if e := apiclient.AsError(err); e != nil && e.Status == http.StatusGone {
					b.Outcome = OutSoldOut
					return
				}
				pause(ctx, err)
				continue
			}
			path = p
		}
		ref, err := c.Buy(ctx, token, item, path)
		now := time.Now()
		h.note("buy", err, now)
		if err == nil {
			h.accepted.Add(1)
			told(ref)
			return
		}
		e := apiclient.AsError(err)
		switch {
		case e == nil: // no answer: the buy may or may not have happened
			b.Ambiguous = true
		case e.Status == http.StatusGone:
			b.Outcome = OutSoldOut
			return
		case e.Code == "already_bought":
			if e.OrderRef != "" {
				told(e.OrderRef)
				return
			}
			path = ""
		case e.Status == http.StatusTooManyRequests:
		case e.Status >= 500:
			// An answer, not an indeterminate request: if the unit was
			// taken anyway, a retry of the same path must say so.
		default: // bad_path (consumed or expired), not_live, challenge_failed...
			path = ""
		}
		pause(ctx, err)
	}
	if b.Ambiguous {
		b.Outcome = OutIndeterminate
	} else {
		b.Outcome = OutGaveUp
	}
}
