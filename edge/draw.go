package edge

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
	"seckill/httpapi"
)

// DrawBackend is a Backend that runs draws (allocation draw, issue 17):
// backendclient.Client, discovery.Balancer and seckill dev's in-process
// backend are.
type DrawBackend interface {
	Enter(ctx context.Context, itemID, userID int64) (seckill.EntryState, error)
	Entry(ctx context.Context, itemID, userID int64) (seckill.EntryState, error)
	Draw(ctx context.Context, itemID int64) (seckill.DrawView, error)
	DrawEntries(ctx context.Context, itemID int64) (seckill.EntryList, error)
}

// drawRoutes are the public routes of the draw (docs/API.md, "The draw").
// They use the token buckets of existing classes: entering is a path-class
// call (one per user per second), reading one's entry a status call, the
// draw and its entry list catalogue calls.
func (e *Edge) drawRoutes(ec *echo.Echo) {
	ec.POST("/api/items/:id/entry", e.enter)
	ec.GET("/api/items/:id/entry", e.entry)
	ec.GET("/api/items/:id/draw", e.drawView)
	ec.GET("/api/items/:id/draw/entries", e.drawEntries)
}

// drawAdminRoutes are the admin routes of the draw.
func (e *Edge) drawAdminRoutes(adm *echo.Group) {
	adm.GET("/items/:id/draw", e.adminDraw)
	adm.GET("/items/:id/draw/entries", e.adminDrawEntries)
}

func (e *Edge) drawBackend() (DrawBackend, error) {
	db, ok := e.be.(DrawBackend)
	if !ok {
		return nil, seckill.Errorf(seckill.EConflict, "this edge's backend runs no draws")
	}
	return db, nil
}

// drawItem returns a draw item from the catalogue copy (items never
// change once created, so any copy is right).
func (e *Edge) drawItem(ctx context.Context, id int64) (seckill.ItemView, error) {
	it, err := e.catalog.Item(ctx, id)
	if err != nil {
		return it, unavailable(err)
	}
	if it.AllocationMode() != seckill.AllocationDraw {
		return it, seckill.Errorf(seckill.EConflict, "this sale is not a draw (allocation %s)", it.AllocationMode())
	}
	return it, nil
}

// enter is POST /api/items/{id}/entry: 201 with the new entry, 200 with
// the same entry on a repeat.
func (e *Edge) enter(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classPath, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	it, err := e.drawItem(ctx, id)
	if err != nil {
		return err
	}
	if err := e.drawEligible(ses, it.Item); err != nil {
		return err
	}
	db, err := e.drawBackend()
	if err != nil {
		return err
	}
	st, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.EntryState, error) {
		return db.Enter(ctx, id, ses.UserID)
	})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if st.Created {
		status = http.StatusCreated
	}
	return c.JSON(status, st)
}

// entry is GET /api/items/{id}/entry: where the caller stands.
func (e *Edge) entry(c echo.Context) error {
	id := itemParam(c)
	ses, err := e.gate(c, classStatus, id, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := e.drawItem(ctx, id); err != nil {
		return err
	}
	db, err := e.drawBackend()
	if err != nil {
		return err
	}
	st, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.EntryState, error) {
		return db.Entry(ctx, id, ses.UserID)
	})
	if err != nil && seckill.ErrorCode(err) == seckill.ENotLive {
		// Entries closed without this account: it is simply not in the draw.
		return c.JSON(http.StatusOK, seckill.EntryState{State: seckill.EntryNone})
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (e *Edge) readDraw(c echo.Context, class string) error {
	id := itemParam(c)
	if class != "" {
		if _, err := e.gate(c, class, id, false); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	if _, err := e.drawItem(ctx, id); err != nil {
		return err
	}
	db, err := e.drawBackend()
	if err != nil {
		return err
	}
	v, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.DrawView, error) { return db.Draw(ctx, id) })
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (e *Edge) readDrawEntries(c echo.Context, class string) error {
	id := itemParam(c)
	if class != "" {
		if _, err := e.gate(c, class, id, false); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	if _, err := e.drawItem(ctx, id); err != nil {
		return err
	}
	db, err := e.drawBackend()
	if err != nil {
		return err
	}
	l, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.EntryList, error) { return db.DrawEntries(ctx, id) })
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}

// drawView is GET /api/items/{id}/draw: commitment, entry-list hash once
// closed, seed and order once drawn.
func (e *Edge) drawView(c echo.Context) error { return e.readDraw(c, classCatalog) }

// drawEntries is GET /api/items/{id}/draw/entries: the entry list once
// closed, for anybody to check the draw.
func (e *Edge) drawEntries(c echo.Context) error { return e.readDrawEntries(c, classCatalog) }

func (e *Edge) adminDraw(c echo.Context) error {
	if _, err := httpapi.ParamID(c, "id"); err != nil {
		return err
	}
	return e.readDraw(c, "")
}

func (e *Edge) adminDrawEntries(c echo.Context) error {
	if _, err := httpapi.ParamID(c, "id"); err != nil {
		return err
	}
	return e.readDrawEntries(c, "")
}

// checkDrawClaim refuses early (at the challenge) a purchase of a draw
// item by an account whose place has no open claim window (409
// not_drawn); the backend checks again at the buy, before the reservation
// script. Items of other allocations pass.
func (e *Edge) checkDrawClaim(ctx context.Context, it seckill.Item, userID int64) error {
	if it.AllocationMode() != seckill.AllocationDraw {
		return nil
	}
	db, err := e.drawBackend()
	if err != nil {
		return err
	}
	st, err := do(ctx, e.guard(), callRead, func(ctx context.Context) (seckill.EntryState, error) {
		return db.Entry(ctx, it.ID, userID)
	})
	if err != nil && seckill.ErrorCode(err) != seckill.ENotLive {
		return err
	}
	now := time.Now()
	if err == nil && st.State == seckill.EntryWon && !now.Before(st.ClaimFrom) && now.Before(st.ClaimUntil) {
		return nil
	}
	return seckill.Errorf(seckill.ENotDrawn, "this sale is a draw and your place has no open claim window (GET /api/items/%d/entry)", it.ID)
}

// drawEligible is the item's eligibility check for an entry (issue 15:
// 409 not_eligible). NOT WIRED YET: the eligibility check of issue 15
// (edge/eligible.go, e.checkEligible) was not on main when this was
// written; once it is, this must return e.checkEligible(ses, it). Until
// then an entry checks no eligibility rule (min_account_age is still
// checked at the challenge and the buy).
func (e *Edge) drawEligible(ses Session, it seckill.Item) error {
	_, _ = ses, it
	return nil
}
