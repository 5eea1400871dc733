package edge

import (
	"fmt"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"seckill"
)

// originGuard refuses cross-site browser requests on the public API's
// state-changing routes (CSRF; issue 13 M1). Go's CrossOriginProtection
// judges Sec-Fetch-Site, then Origin against Host; a request with neither
// header is a non-browser client (curl, the load tools) and passes, since
// a browser always sends one of them on a cross-origin POST. Origins an
// operator trusts (a storefront on another host) pass too.
//
// A request that looks like a browser's (it carries a cookie, an Origin
// or a Sec-Fetch-Site header) must also send its body as
// application/json: an HTML form cannot, so a form on a site without
// Sec-Fetch-Site support still cannot post, and a cross-site fetch with that
// type needs a CORS preflight this API never grants. Bodyless requests
// (logout) need no type. Safe methods (GET, HEAD, OPTIONS) are not checked.
type originGuard struct {
	cop *http.CrossOriginProtection
}

func newOriginGuard(trusted []string) (*originGuard, error) {
	cop := http.NewCrossOriginProtection()
	for _, o := range trusted {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("trusted origin %q: %w (want scheme://host[:port])", o, err)
		}
	}
	return &originGuard{cop: cop}, nil
}

func (g *originGuard) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := g.check(c.Request()); err != nil {
			return err // counted by Edge.countRefusals
		}
		return next(c)
	}
}

func (g *originGuard) check(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if err := g.cop.Check(r); err != nil {
		return seckill.Errorf(seckill.ECrossOrigin, "cross-site request refused: the page that sent it is not this shop (Origin or Sec-Fetch-Site)")
	}
	browser := r.Header.Get("Cookie") != "" || r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != ""
	if !browser {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength == 0 {
		return nil // no body at all
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return seckill.Errorf(seckill.EMediaType, "a browser request's body must be sent as Content-Type: application/json")
	}
	return nil
}
