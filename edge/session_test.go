package edge

import (
	"context"
	"strings"
	"testing"
	"time"

	"seckill"
	"seckill/limit"
)

// Issue 13 (low): the session cookie is Secure unless a plain-HTTP setup
// asks otherwise (InsecureCookie: `seckill dev`, --secure-cookie=false).
func TestSessionCookieSecureByDefault(t *testing.T) {
	t.Parallel()
	lim, err := limit.New(nil, limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	e := New(Config{SessionSecret: []byte("k")}, Deps{Limiter: lim})
	if ck := e.sessions.Cookie("t", time.Now().Add(time.Hour)); !ck.Secure || !ck.HttpOnly {
		t.Fatalf("default cookie: %+v", ck)
	}
	e = New(Config{SessionSecret: []byte("k"), InsecureCookie: true}, Deps{Limiter: lim})
	if ck := e.sessions.Cookie("t", time.Now().Add(time.Hour)); ck.Secure {
		t.Fatalf("insecure cookie asked for: %+v", ck)
	}
}

// Issue 13 M2: tokens carry a key id; after a rotation the previous key's
// tokens are accepted until the overlap window ends, then refused.
func TestSessionKeyRotation(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clock := func() time.Time { return now }
	old := NewSessions([]byte("old-secret"), time.Hour, true)
	old.now = clock
	oldTok, _ := old.Sign(7, "ann")
	if kid, _, _ := strings.Cut(oldTok, "."); kid != KeyID([]byte("old-secret")) {
		t.Fatalf("token %q does not start with its key id", oldTok)
	}
	cur := NewSessions([]byte("new-secret"), time.Hour, true)
	cur.now = clock
	if _, err := cur.Verify(oldTok); seckill.ErrorCode(err) != seckill.EUnauthorized {
		t.Fatalf("old token without overlap: %v", err)
	}
	cur = NewSessions([]byte("new-secret"), time.Hour, true)
	cur.now = clock
	cur.AcceptPrevious([]byte("old-secret"), now.Add(10*time.Minute))
	if ses, err := cur.Verify(oldTok); err != nil || ses.UserID != 7 {
		t.Fatalf("old token in the overlap: %+v %v", ses, err)
	}
	newTok, _ := cur.Sign(8, "bob")
	if kid, _, _ := strings.Cut(newTok, "."); kid != KeyID([]byte("new-secret")) {
		t.Fatalf("new tokens must be signed with the new key: %q", newTok)
	}
	now = now.Add(11 * time.Minute) // window over: refused, cached or not
	if _, err := cur.Verify(oldTok); seckill.ErrorCode(err) != seckill.EUnauthorized {
		t.Fatalf("old token after the overlap: %v", err)
	}
	if _, err := cur.Verify(newTok); err != nil {
		t.Fatalf("new token: %v", err)
	}
	// A token signed by the old key but naming the new key's id fails.
	_, rest, _ := strings.Cut(oldTok, ".")
	if _, err := cur.Verify(KeyID([]byte("new-secret")) + "." + rest); err == nil {
		t.Fatal("a token with a swapped key id was accepted")
	}
}

// Issue 13 M2: a revoked token and every token issued before a user's
// not-before are refused, from the cache too.
func TestSessionRevocationInMemory(t *testing.T) {
	t.Parallel()
	s := NewSessions([]byte("k"), time.Hour, true)
	a, _ := s.Sign(1, "a")
	b, _ := s.Sign(1, "a")
	c, _ := s.Sign(2, "c")
	for _, tok := range []string{a, b, c} {
		if _, err := s.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	sa, _ := s.Verify(a)
	v := &revoker{sessions: s}
	v.applyToken(sa.ID, sa.Expires)
	if _, err := s.Verify(a); err == nil {
		t.Fatal("revoked token accepted")
	}
	if _, err := s.Verify(b); err != nil {
		t.Fatalf("the user's other token: %v", err)
	}
	v.applyNotBefore(1, time.Now().Add(time.Millisecond).UnixMilli())
	if _, err := s.Verify(b); err == nil {
		t.Fatal("token issued before the not-before accepted")
	}
	if _, err := s.Verify(c); err != nil {
		t.Fatalf("another user's token: %v", err)
	}
	time.Sleep(5 * time.Millisecond)
	d, _ := s.Sign(1, "a")
	if _, err := s.Verify(d); err != nil {
		t.Fatalf("token issued after the not-before: %v", err)
	}
}

type overloadedBackend struct {
	Backend
	calls int
}

func (b *overloadedBackend) Login(context.Context, string, string) (seckill.Account, error) {
	b.calls++
	return seckill.Account{}, seckill.Errorf(seckill.EOverloaded, "hashing full")
}

// After the backend said its password hashing is full, the edge refuses
// logins itself for accountsBackoff: refused logins then cost the backend
// nothing.
func TestAccountsBackoffAfterBackendOverload(t *testing.T) {
	t.Parallel()
	lim, err := limit.New(nil, limit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	be := &overloadedBackend{}
	e := New(Config{SessionSecret: []byte("k")}, Deps{Limiter: lim, Backend: be})
	// The 5 logins below must all come within the backoff: its 50 ms
	// was within reach of a busy machine's scheduling.
	e.acctBackoff = time.Second
	login := func() error {
		_, err := accountCall(context.Background(), e, func(ctx context.Context) (seckill.Account, error) { return be.Login(ctx, "a", "b") })
		return err
	}
	for range 5 {
		if err := login(); seckill.ErrorCode(err) != seckill.EOverloaded {
			t.Fatalf("%v, want overloaded", err)
		}
	}
	if be.calls != 1 {
		t.Fatalf("%d backend calls within the backoff, want 1", be.calls)
	}
	time.Sleep(e.acctBackoff + 10*time.Millisecond)
	_ = login()
	if be.calls != 2 {
		t.Fatalf("%d backend calls after the backoff, want 2", be.calls)
	}
}
