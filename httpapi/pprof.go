package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/labstack/echo/v4"
)

// RegisterPprof serves the Go profiles under g (an admin group behind its
// token): GET .../debug/pprof/profile?seconds=N (CPU), .../heap,
// .../allocs, .../goroutine, .../mutex, .../block, .../trace?seconds=N.
func RegisterPprof(g *echo.Group) {
	g.GET("/debug/pprof/profile", echo.WrapHandler(pprofHandler(pprof.Profile)))
	g.GET("/debug/pprof/trace", echo.WrapHandler(pprofHandler(pprof.Trace)))
	for _, name := range []string{"heap", "allocs", "goroutine", "mutex", "block", "threadcreate"} {
		g.GET("/debug/pprof/"+name, echo.WrapHandler(pprof.Handler(name)))
	}
}

type pprofHandler func(w http.ResponseWriter, r *http.Request)

func (f pprofHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { f(w, r) }
