package edge

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"seckill"
	"seckill/httpapi"
)

func (e *Edge) createItem(c echo.Context) error {
	var req seckill.CreateItemRequest
	if err := httpapi.BindJSONStrict(c, 16<<10, &req); err != nil {
		return err
	}
	it := req.Item()
	if err := seckill.ValidateItem(&it); err != nil {
		return err
	}
	ctx := c.Request().Context()
	created, err := e.be.CreateItem(ctx, it)
	if err != nil {
		return unavailable(err)
	}
	e.catalog.Learn(created.ID)
	e.catalog.Invalidate()
	e.publish(ctx, "items "+strconv.FormatInt(created.ID, 10))
	e.log.Info("item created", "item", created.ID, "stock", created.Stock, "challenge", created.Challenge)
	return c.JSON(http.StatusCreated, map[string]any{"id": created.ID, "item": created})
}

// StatsView is the admin view of a sale: the backend's counters and the
// defences switched off at the edge.
type StatsView struct {
	seckill.Stats
	DefencesOff []string `json:"defences_off"`
	// Queue: the waiting room of a sale with allocation queue.
	Queue *QueueStats `json:"queue,omitempty"`
}

func (e *Edge) stats(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	st, err := e.be.Stats(c.Request().Context(), id)
	if err != nil {
		return unavailable(err)
	}
	off := e.defences.get(id).Off()
	if off == nil {
		off = []string{}
	}
	q, err := e.queueStats(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, StatsView{Stats: st, DefencesOff: off, Queue: q})
}

func (e *Edge) getDefences(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, e.defences.get(id))
}

// putDefences switches defences of one sale on or off. The body names only
// the switches to change: {"path_binding": false}.
func (e *Edge) putDefences(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := e.catalog.Item(ctx, id); err != nil {
		return unavailable(err)
	}
	d := e.defences.get(id)
	if err := httpapi.BindJSONStrict(c, 4<<10, &d); err != nil {
		return err
	}
	if err := e.defences.set(ctx, id, d); err != nil {
		return err
	}
	e.publish(ctx, "defences "+strconv.FormatInt(id, 10))
	if off := d.Off(); len(off) > 0 {
		e.log.Warn("TEACHING: defences switched OFF for a sale", "item", id, "off", off)
	} else {
		e.log.Warn("TEACHING: every defence back on for a sale", "item", id)
	}
	return c.JSON(http.StatusOK, d)
}

// MaxSessions is the most sessions one admin call may create.
const MaxSessions = seckill.MaxEnsureUsers

func (e *Edge) createSessions(c echo.Context) error {
	var req struct {
		Usernames []string `json:"usernames"`
	}
	if err := httpapi.BindJSONStrict(c, 1<<20, &req); err != nil {
		return err
	}
	if len(req.Usernames) == 0 || len(req.Usernames) > MaxSessions {
		return seckill.Errorf(seckill.EInvalid, "usernames must hold 1 to %d names", MaxSessions)
	}
	for _, n := range req.Usernames {
		if err := seckill.ValidateUsername(n); err != nil {
			return seckill.Errorf(seckill.EInvalid, "username %q: must be 3 to 32 characters of A-Z, a-z, 0-9, '_', '.', '-'", n)
		}
	}
	accts, err := e.be.EnsureUsers(c.Request().Context(), req.Usernames)
	if err != nil {
		return unavailable(err)
	}
	tokens := make(map[string]string, len(accts))
	for name, a := range accts {
		tokens[name], _ = e.sessions.SignAccount(a, name) // with created_at and network when the backend said
	}
	return c.JSON(http.StatusOK, map[string]any{"tokens": tokens})
}
