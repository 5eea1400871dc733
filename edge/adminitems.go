package edge

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// adminItems is GET /admin/items: every sale of the catalogue, as
// GET /api/items lists them, for the dashboard (no token bucket: admin).
func (e *Edge) adminItems(c echo.Context) error {
	items, err := e.catalog.Items(c.Request().Context())
	if err != nil {
		return unavailable(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"now": time.Now().UTC(), "items": items})
}
