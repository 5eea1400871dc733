package bench

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// HelloHandler is the baseline of `seckill bench edge`: a bare echo v4
// handler answering "hello" on GET /, with nothing in front of it.
func HelloHandler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/", func(c echo.Context) error { return c.String(http.StatusOK, "hello") })
	return e
}
