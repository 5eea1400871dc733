package backend

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"seckill/httpapi"
)

// drawRoutes are the draw's routes (docs/BACKEND_API.md, "The draw").
func (h *Handler) drawRoutes(e *echo.Echo) {
	e.POST("/v1/items/:id/entries", h.enter)
	e.GET("/v1/items/:id/entries/:user", h.entry)
	e.GET("/v1/items/:id/draw", h.draw)
	e.GET("/v1/items/:id/draw/entries", h.drawEntries)
}

func (h *Handler) enter(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	var req struct {
		UserID int64 `json:"user_id"`
	}
	if err := httpapi.BindJSON(c, BodyLimit, &req); err != nil {
		return err
	}
	st, err := h.svc.Enter(c.Request().Context(), id, req.UserID)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if st.Created {
		status = http.StatusCreated
	}
	return c.JSON(status, st)
}

func (h *Handler) entry(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	user, err := httpapi.ParamID(c, "user")
	if err != nil {
		return err
	}
	st, err := h.svc.Entry(c.Request().Context(), id, user)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (h *Handler) draw(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	v, err := h.svc.Draw(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (h *Handler) drawEntries(c echo.Context) error {
	id, err := httpapi.ParamID(c, "id")
	if err != nil {
		return err
	}
	l, err := h.svc.DrawEntries(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}
