package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/edge"
)

// TestBrowserCrossSiteRefused (issue 13 M1) in Chromium: the victim logs in
// on the storefront (same-origin: works); a cross-site page's login CSRF
// form, a same-site page on another port posting with her cookie, and a
// forced logout all get 403 cross_origin; she stays herself, logged in.
func TestBrowserCrossSiteRefused(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 4})
	b := newBrowser(t)
	item := env.createItem(5, "pow", -time.Second, time.Hour)
	if a := registerPassword(t, env.pub.URL, "mallory", "correct horse battery"); a.status != 201 {
		t.Fatalf("register mallory: %d %v", a.status, a.body)
	}
	b.registerAndLogin(env.pub.URL, "victim", "correct horse battery")

	edgeURL := env.pub.URL
	form := func(action, enctype, name, value string) string {
		return fmt.Sprintf(`<!doctype html><form method="POST" action="%s%s" enctype="%s"><input type="hidden" name='%s' value='%s'></form><script>document.forms[0].submit()</script>`,
			edgeURL, action, enctype, name, value)
	}
	pages := map[string]string{
		// text/plain form body: {"username":"mallory","password":"...","x":"="}
		"/login": form("/api/login", "text/plain", `{"username":"mallory","password":"correct horse battery","x":"`, `"}`),
		"/buy":   form(fmt.Sprintf("/api/items/%d/challenge", item), "application/x-www-form-urlencoded", "a", "b"),
		"/out":   form("/api/logout", "application/x-www-form-urlencoded", "a", "b"),
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(pages[r.URL.Path]))
	}))
	t.Cleanup(evil.Close)
	// localhost is another site than 127.0.0.1; 127.0.0.1 on another port
	// is the same site, another origin (SameSite=Lax sends the cookie).
	crossSite := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	sameSite := evil.URL
	steps := []struct{ page, route string }{
		{crossSite + "/login", "POST /api/login"},
		{sameSite + "/login", "POST /api/login"},
		{sameSite + "/buy", fmt.Sprintf("POST /api/items/%d/challenge", item)},
		{sameSite + "/out", "POST /api/logout"},
	}
	for _, st := range steps {
		before := len(env.reqs.matching("^" + st.route + "$"))
		b.do(10*time.Second, "open "+st.page, chromedp.Navigate(st.page))
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := env.reqs.matching("^" + st.route + "$")
			if len(got) > before {
				if s := got[len(got)-1].status; s != 403 {
					t.Errorf("%s: the edge answered %d, want 403", st.page, s)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the form never reached the edge", st.page)
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.waitJS(5*time.Second, "the refusal", `document.body && document.body.innerText.includes('cross_origin')`)
	}
	b.shot("refused")
	// Still the victim, still logged in.
	b.do(10*time.Second, "storefront", chromedp.Navigate(env.pub.URL+"/#/"))
	b.waitJS(10*time.Second, "signed in", `!!document.getElementById('signed-in')`)
	if got := b.text("signed-in"); !strings.Contains(got, "victim") {
		t.Fatalf("after the attacks the page shows %q, want the victim signed in", got)
	}
	b.shot("still-victim")
}
