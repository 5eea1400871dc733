package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"seckill/edge"
	"seckill/limit"
	"seckill/web"
)

// chromiumPath is Debian's Chromium (scripts/services.sh install).
const chromiumPath = "/usr/bin/chromium"

// browserEnv is an edgeEnv whose edge serves the storefront and the
// dashboard (package web), with a log of the public requests.
type browserEnv struct {
	*edgeEnv
	reqs *requestLog
}

// newBrowserEnv is newEdgeEnv with edge.Deps.Storefront and Dashboard set.
func newBrowserEnv(t *testing.T, rules []limit.Rule, cfg edge.Config) *browserEnv {
	t.Helper()
	reqs := &requestLog{}
	env := newEdgeEnvWith(t, rules, cfg, func(d *edge.Deps) {
		d.Storefront, d.Dashboard = web.Storefront(), web.Dashboard()
	}, reqs.wrap)
	return &browserEnv{edgeEnv: env, reqs: reqs}
}

// loggedRequest is one request of the browser to the public listener.
type loggedRequest struct {
	at         time.Time // when the answer was written
	method     string
	path       string
	status     int
	retryAfter string
}

type requestLog struct {
	mu   sync.Mutex
	reqs []loggedRequest
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		l.reqs = append(l.reqs, loggedRequest{at: arrived, method: r.Method, path: r.URL.Path, status: sw.status, retryAfter: w.Header().Get("Retry-After")})
		l.mu.Unlock()
	})
}

// matching returns the logged requests whose "METHOD path" matches re.
func (l *requestLog) matching(re string) []loggedRequest { return l.since(0, re) }

// count is the number of requests logged so far.
func (l *requestLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// since is matching on the requests logged after the first n.
func (l *requestLog) since(n int, re string) []loggedRequest {
	rx := regexp.MustCompile(re)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []loggedRequest
	for _, r := range l.reqs[min(n, len(l.reqs)):] {
		if rx.MatchString(r.method + " " + r.path) {
			out = append(out, r)
		}
	}
	return out
}

// browser is one headless Chromium with one tab.
type browser struct {
	t    testing.TB
	ctx  context.Context
	dir  string // screenshots
	n    int
	mu   sync.Mutex
	errs []string // uncaught exceptions of the page
}

// screenshotDir is $SECKILL_SCREENSHOTS/<test>, else
// $TMPDIR/seckill-screenshots/<test>.
func screenshotDir(t testing.TB) string {
	root := os.Getenv("SECKILL_SCREENSHOTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "seckill-screenshots")
	}
	dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", dir)
	return dir
}

// newBrowser starts Debian's Chromium; without it the test skips (fails
// when CI=true).
func newBrowser(t testing.TB) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: run scripts/services.sh install (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("%s is missing: install it with scripts/services.sh install (apt-get install chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, dir: screenshotDir(t)}
	if err := chromedp.Do(ctx); err != nil { // starts the browser (no timeout on the first run)
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, m.String())
				b.mu.Unlock()
			}
			if testing.Verbose() {
				t.Logf("console %s: %s", m.Type, m.Text)
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errs {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return b
}

// do runs actions with a timeout, failing the test (with a screenshot and
// the status line) on error.
func (b *browser) do(timeout time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	status := b.evalString(`(document.getElementById('status')||{}).textContent || ''`)
	b.shot("FAILED-" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(what), "-"))
	b.t.Fatalf("%s: %v (status line: %q)", what, err, status)
}

// waitJS waits until the JavaScript expression is truthy.
func (b *browser) waitJS(timeout time.Duration, what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+2*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.fail("waiting for "+what, err)
	}
}

func (b *browser) evalString(expr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(`+expr+`)`))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return s
}

// evalJSON evaluates expr in the page and decodes its JSON into v.
func (b *browser) evalJSON(expr string, v any) {
	b.t.Helper()
	raw := b.evalString(`JSON.stringify(` + expr + `)`)
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		b.t.Fatalf("%s: %v (%s)", expr, err, raw)
	}
}

// offline makes requests to urlPattern fail as if the network were down
// (on), or lifts every such rule (off).
func (b *browser) offline(urlPattern string, on bool) {
	b.t.Helper()
	var conds []*network.Conditions
	if on {
		conds = []*network.Conditions{{URLPattern: urlPattern, Offline: true, DownloadThroughput: -1, UploadThroughput: -1}}
	}
	b.do(5*time.Second, "network conditions", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{MatchedNetworkConditions: conds})
		return err
	}))
}

// text is the text of the element with this id ("" if there is none).
func (b *browser) text(id string) string {
	return b.evalString(fmt.Sprintf(`(document.getElementById(%q)||{}).textContent || ''`, id))
}

// attr is an attribute of the element with this id ("" if none).
func (b *browser) attr(id, name string) string {
	return b.evalString(fmt.Sprintf(`(document.getElementById(%q)||{getAttribute(){return ''}}).getAttribute(%q) || ''`, id, name))
}

// shot saves a full-page screenshot as NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.n++
	f := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(f, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

// typeInto replaces the value of an input by typing into it.
func (b *browser) typeInto(id, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.ID(id)),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = ''; return true; })()`, id))(ctx, t)
			return err
		}),
		chromedp.SendKeys(chromedp.ID(id), text),
	)
}

// registerAndLogin registers through the register page, which solves the
// edge's registration challenge (a proof of work) and logs the new account
// in.
func (b *browser) registerAndLogin(base, username, password string) {
	b.t.Helper()
	b.do(10*time.Second, "register page",
		chromedp.Navigate(base+"/#/register"),
		b.typeInto("register-username", username),
		b.typeInto("register-password", password),
	)
	b.shot("register")
	b.do(5*time.Second, "register", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(90*time.Second, "signed in", `!!document.getElementById('signed-in') && location.hash === '#/'`)
	if got := b.text("status"); got != "Account created. Welcome, "+username+"!" {
		b.t.Errorf("after register, status %q", got)
	}
	if got := b.text("signed-in"); !strings.Contains(got, username) {
		b.t.Errorf("signed-in shows %q", got)
	}
}

// intAttr parses an attribute as an integer.
func (b *browser) intAttr(id, name string) int64 {
	v, err := strconv.ParseInt(b.attr(id, name), 10, 64)
	if err != nil {
		b.t.Fatalf("#%s[%s]: %v", id, name, err)
	}
	return v
}
