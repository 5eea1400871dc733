// Package web is the browser side of the shop: the storefront (served by
// the edge's public listener for every path outside the API) and the admin
// dashboard (served under /dashboard/ on the admin listener). Plain HTML,
// CSS and JavaScript modules embedded in the binary: no build step.
//
// Caching: the HTML pages are served with Cache-Control: no-cache (always
// revalidated, ETag). They load their assets from /assets/<version>/..., where
// version is a hash of every asset of the page, so an asset URL never changes
// meaning: the current version is cached for a year (immutable); any other
// version is served with no-cache (a page of an older deploy gets the
// current files). Every response carries an ETag and answers If-None-Match
// with 304.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// AssetsPlaceholder in an HTML page is replaced by the versioned assets URL
// prefix ("/assets/<version>" under the mount point).
const AssetsPlaceholder = "{{ASSETS}}"

// contentSecurityPolicy allows only same-origin scripts, styles, workers and
// requests; images may be data: URLs (the captcha).
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; " +
	"worker-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type file struct {
	body  []byte
	etag  string
	ctype string
}

func newFile(name string, body []byte) file {
	sum := sha256.Sum256(body)
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".html":
		ct = "text/html; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return file{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ct}
}

// site serves one page and its assets.
type site struct {
	index    file
	notFound file
	assets   map[string]file
	version  string
	api      bool // answer /api/* with a problem+json 404
}

// newSite loads static/<dir>. base is the URL path the handler is mounted
// at, as the browser sees it ("" for the root).
func newSite(dir, base string, api bool) *site {
	sub, err := fs.Sub(static, "static/"+dir)
	if err != nil {
		panic(err)
	}
	s := &site{assets: map[string]file{}, api: api}
	var html []byte
	var names []string
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		if p == "index.html" {
			html = b
			return nil
		}
		s.assets[p] = newFile(p, b)
		names = append(names, p)
		return nil
	})
	if err != nil || html == nil {
		panic("web: static/" + dir + ": missing index.html or unreadable: " + errString(err))
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(s.assets[n].body)
		h.Write([]byte{0})
	}
	s.version = hex.EncodeToString(h.Sum(nil))[:16]
	html = bytes.ReplaceAll(html, []byte(AssetsPlaceholder), []byte(base+"/assets/"+s.version))
	s.index = newFile("index.html", html)
	s.notFound = newFile("404.html", []byte(`<!doctype html><html lang="en"><head><meta charset="utf-8">`+
		`<meta name="viewport" content="width=device-width, initial-scale=1"><title>Not found</title></head>`+
		`<body><main><h1>Page not found</h1><p><a href="`+base+`/">Back to the shop</a></p></main></body></html>`))
	return s
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if s.api && (p == "/api" || strings.HasPrefix(p, "/api/")) {
		writeProblem(w, http.StatusNotFound, "not_found", "no such route")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
		return
	}
	switch {
	case p == "/" || p == "/index.html":
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		serve(w, r, s.index)
		return
	case strings.HasPrefix(p, "/assets/"):
		version, name, ok := strings.Cut(strings.TrimPrefix(p, "/assets/"), "/")
		if f, found := s.assets[name]; ok && found {
			if version == s.version {
				h.Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				h.Set("Cache-Control", "no-cache")
			}
			serve(w, r, f)
			return
		}
	}
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", s.notFound.ctype)
	w.WriteHeader(http.StatusNotFound)
	if r.Method != http.MethodHead {
		_, _ = w.Write(s.notFound.body)
	}
}

func serve(w http.ResponseWriter, r *http.Request, f file) {
	w.Header().Set("ETag", f.etag)
	w.Header().Set("Content-Type", f.ctype)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// writeProblem writes an RFC 9457 problem like the API's (docs/API.md).
func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	body, _ := json.Marshal(map[string]any{
		"type": "https://seckill.dev/problems/" + code, "title": http.StatusText(status),
		"status": status, "detail": detail, "code": code,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Storefront serves the shop's pages for the public listener: the page at
// / and its assets. Any path under /api/ that reaches it is an unknown API
// route: 404 application/problem+json {"code":"not_found"}.
func Storefront() http.Handler { return newSite("storefront", "", true) }

// DashboardPrefix is where the edge mounts Dashboard on the admin listener.
const DashboardPrefix = "/dashboard"

// Dashboard serves the admin dashboard. It expects the full request path
// (/dashboard/...) and strips DashboardPrefix itself.
func Dashboard() http.Handler {
	s := newSite("dashboard", DashboardPrefix, false)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, DashboardPrefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if rest == "" {
			http.Redirect(w, r, DashboardPrefix+"/", http.StatusFound)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		s.ServeHTTP(w, r2)
	})
}
