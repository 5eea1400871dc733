package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"seckill/apiclient"
)

// fakeRoom answers the waiting room's routes from a script of answers.
type fakeRoom struct {
	mu    sync.Mutex
	calls []time.Time
	reqs  []string
	token []string                           // X-Queue-Token of each request
	next  func(n int, w http.ResponseWriter) // n: the request's index
}

func (f *fakeRoom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, time.Now())
	f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
	f.token = append(f.token, r.Header.Get("X-Queue-Token"))
	f.mu.Unlock()
	f.next(n, w)
}

func testRunner(t *testing.T, h http.Handler, timeout time.Duration) *runner {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	hc := &http.Client{Timeout: timeout}
	return &runner{c: &client{api: apiclient.New(srv.URL, srv.URL, "T", hc), rec: &recorder{start: time.Now()}},
		itemURL: "/api/items/7", startAt: time.Now()}
}

// A poll that times out is asked again only after the last poll_after,
// as the storefront does, not at once.
func TestQueueCallWaitsPollAfterAfterATimeout(t *testing.T) {
	release := make(chan struct{})
	f := &fakeRoom{next: func(n int, w http.ResponseWriter) {
		if n == 0 {
			<-release // past the client's timeout
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"state":"waiting","poll_after":3}`))
	}}
	// The first poll never answers in time; the client's timeout is wide
	// (1 s) so the second, answered at once, cannot time out on a busy
	// machine too (with 100 ms it did, under load).
	r := testRunner(t, f, time.Second)
	defer close(release)
	rep := r.queueCall(context.Background(), &actor{kind: Honest}, "queue_poll", http.MethodGet, 400*time.Millisecond)
	if rep.err != nil || rep.status != 200 || rep.str("state") != "waiting" {
		t.Fatalf("reply %+v", rep)
	}
	if len(f.calls) != 2 {
		t.Fatalf("%d requests, want 2", len(f.calls))
	}
	if gap := f.calls[1].Sub(f.calls[0]); gap < 1400*time.Millisecond {
		t.Errorf("asked again %s after the first poll, want at least the 1 s timeout + 400 ms (poll_after)", gap)
	}
	recs := r.c.rec.snapshot()
	if len(recs) != 2 || recs[0].Code != "error:timeout" || recs[1].Status != 200 {
		t.Errorf("records %+v, want a timeout then a 200", recs)
	}
}

// waitTurn joins, polls at poll_after with the last poll_token, and stops
// at the admission with the pass, recording when the user saw it.
func TestWaitTurnJoinsPollsAndTakesThePass(t *testing.T) {
	until := time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)
	f := &fakeRoom{next: func(n int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		switch n {
		case 0:
			_, _ = w.Write([]byte(`{"ticket":"t1","state":"waiting","position":2,"poll_after":1,"poll_token":"pt-a"}`))
		case 1:
			_, _ = w.Write([]byte(`{"ticket":"t1","state":"waiting","position":1,"poll_after":1,"poll_token":"pt-b"}`))
		default:
			_, _ = w.Write([]byte(`{"ticket":"t1","state":"admitted","pass":"p1","admitted_until":"` + until + `","poll_after":30}`))
		}
	}}
	r := testRunner(t, f, time.Second)
	a := &actor{kind: Honest}
	if out := r.waitTurn(context.Background(), a); out != "" {
		t.Fatalf("waitTurn = %q", out)
	}
	want := []string{"POST /api/items/7/queue", "GET /api/items/7/queue", "GET /api/items/7/queue"}
	if len(f.reqs) != 3 || f.reqs[0] != want[0] || f.reqs[1] != want[1] || f.reqs[2] != want[2] {
		t.Fatalf("requests %v, want %v", f.reqs, want)
	}
	for i := 1; i < 3; i++ {
		if gap := f.calls[i].Sub(f.calls[i-1]); gap < time.Second {
			t.Errorf("request %d came %s after the one before, want at least poll_after (1 s)", i, gap)
		}
	}
	if f.token[0] != "" || f.token[1] != "pt-a" || f.token[2] != "pt-b" {
		t.Errorf("X-Queue-Token sent %q, want none on the join, then each answer's poll_token", f.token)
	}
	if a.pass != "p1" || !a.admitted(r.itemURL) || len(r.admits) != 1 {
		t.Errorf("pass %q, admitted %v, admissions seen %d; want p1, true, 1", a.pass, a.admitted(r.itemURL), len(r.admits))
	}
	// the next seed's sale: the pass of this one does not admit to it
	if a.admitted(r.itemURL + "x") {
		t.Errorf("a pass of %s admitted to another sale", r.itemURL)
	}
}
