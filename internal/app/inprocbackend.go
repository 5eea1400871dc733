package app

import (
	"context"
	"errors"

	"seckill"
	"seckill/backend"
	"seckill/edge"
)

// inprocBackend is the edge's backend called in the same process (`seckill
// dev`): the backend service itself, with the answers the HTTP client
// would give (a refusal the backend gives is a business answer; anything
// else is *backend.UnavailableError, which the edge's breaker counts), and
// no HTTP hop.
type inprocBackend struct{ svc *backend.Service }

var _ edge.Backend = inprocBackend{}

// unavailable wraps an answer that is not a business answer, as the HTTP
// client does for a 5xx or a transport failure.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	switch seckill.ErrorCode(err) {
	case seckill.EInternal, seckill.EUnavailable, seckill.EOverloaded, seckill.EDependency:
		return &backend.UnavailableError{Err: err}
	}
	return err
}

func (b inprocBackend) Reserve(ctx context.Context, itemID, userID int64, requestID string) (backend.Reservation, error) {
	r, err := b.svc.Reserve(ctx, itemID, userID, requestID)
	if err == nil {
		return r, nil
	}
	var se *seckill.Error
	if seckill.ErrorCode(err) == seckill.EAlreadyBought && r.OrderRef != "" && errors.As(err, &se) {
		return backend.Reservation{}, &backend.HeldError{Err: se, OrderRef: r.OrderRef}
	}
	return backend.Reservation{}, unavailable(err)
}

func (b inprocBackend) Status(ctx context.Context, itemID, userID int64) (backend.OrderState, error) {
	s, err := b.svc.Status(ctx, itemID, userID)
	return s, unavailable(err)
}

func (b inprocBackend) Items(ctx context.Context) ([]backend.ItemView, error) {
	v, err := b.svc.Items(ctx)
	return v, unavailable(err)
}

func (b inprocBackend) CreateItem(ctx context.Context, req backend.CreateItemRequest) (seckill.Item, error) {
	it, err := b.svc.CreateItem(ctx, seckill.Item{
		Name: req.Name, PriceCents: req.PriceCents, Stock: req.Stock,
		StartsAt: req.StartsAt, EndsAt: req.EndsAt, Challenge: req.Challenge,
	})
	return it, unavailable(err)
}

func (b inprocBackend) Stats(ctx context.Context, id int64) (seckill.Stats, error) {
	s, err := b.svc.Stats(ctx, id)
	return s, unavailable(err)
}

func (b inprocBackend) Register(ctx context.Context, username, password string) (int64, error) {
	id, err := b.svc.Register(ctx, username, password)
	return id, unavailable(err)
}

func (b inprocBackend) Login(ctx context.Context, username, password string) (int64, error) {
	id, err := b.svc.Login(ctx, username, password)
	return id, unavailable(err)
}

func (b inprocBackend) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	m, err := b.svc.EnsureUsers(ctx, usernames)
	return m, unavailable(err)
}

func (b inprocBackend) Ready(ctx context.Context) error {
	return unavailable(b.svc.Ready(ctx))
}
