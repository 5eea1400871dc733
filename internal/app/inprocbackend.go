package app

import (
	"context"

	"seckill"
	"seckill/backend"
	"seckill/edge"
)

// inprocBackend is the edge's backend called in the same process (`seckill
// dev`): the backend service itself, with the answers the HTTP client
// (backendclient) gives: a refusal the backend gives is a business answer
// (already_bought as *seckill.HeldError with its order ref, as the service
// returns it); anything else is *seckill.UnavailableError, which the edge
// counts as the backend's failure. No HTTP hop, no JSON.
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
		return &seckill.UnavailableError{Err: err}
	}
	return err
}

func (b inprocBackend) Reserve(ctx context.Context, itemID int64, acct seckill.Account, requestID string) (seckill.Reservation, error) {
	r, err := b.svc.Reserve(ctx, itemID, acct, requestID)
	return r, unavailable(err)
}

func (b inprocBackend) Status(ctx context.Context, itemID, userID int64) (seckill.OrderState, error) {
	s, err := b.svc.Status(ctx, itemID, userID)
	return s, unavailable(err)
}

func (b inprocBackend) Items(ctx context.Context) ([]seckill.ItemView, error) {
	v, err := b.svc.Items(ctx)
	return v, unavailable(err)
}

func (b inprocBackend) CreateItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	it, err := b.svc.CreateItem(ctx, it)
	return it, unavailable(err)
}

func (b inprocBackend) Stats(ctx context.Context, id int64) (seckill.Stats, error) {
	s, err := b.svc.Stats(ctx, id)
	return s, unavailable(err)
}

func (b inprocBackend) Register(ctx context.Context, username, password, network string) (int64, error) {
	id, err := b.svc.Register(ctx, username, password, network)
	return id, unavailable(err)
}

func (b inprocBackend) Login(ctx context.Context, username, password string) (seckill.Account, error) {
	a, err := b.svc.Login(ctx, username, password)
	return a, unavailable(err)
}

func (b inprocBackend) EnsureUsers(ctx context.Context, usernames []string) (map[string]seckill.Account, error) {
	m, err := b.svc.EnsureAccounts(ctx, usernames)
	return m, unavailable(err)
}

func (b inprocBackend) Ready(ctx context.Context) error {
	return unavailable(b.svc.Ready(ctx))
}
