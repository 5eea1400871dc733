package edge

import (
	"strings"
	"testing"
	"time"

	"seckill"
)

// The account's creation time and network ride in the signed token: they
// come back from Verify as signed, a token signed without them is unknown,
// and changing them breaks the signature.
func TestSessionAccountClaims(t *testing.T) {
	t.Parallel()
	s := NewSessions([]byte("claims-secret"), time.Hour, true)
	created := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	tok, _ := s.SignAccount(seckill.Account{ID: 7, CreatedAt: created, Network: "203.0.113.0/24"}, "ann")
	ses, err := s.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	a := ses.Account()
	if a.ID != 7 || !a.CreatedAt.Equal(created) || a.Network != "203.0.113.0/24" || !a.Known() {
		t.Fatalf("account from the token: %+v", a)
	}
	plain, _ := s.Sign(7, "ann")
	ses, err = s.Verify(plain)
	if err != nil {
		t.Fatal(err)
	}
	if a := ses.Account(); a.Known() || a.Network != "" || a.ID != 7 {
		t.Fatalf("token without claims: %+v, want unknown", a)
	}
	// Forge an older account: re-encode the payload with another
	// creation time under the old signature.
	parts := strings.Split(tok, ".")
	raw, _ := b64.DecodeString(parts[1])
	forged := strings.Replace(string(raw), `"c":`, `"c":1`, 1)
	parts[1] = b64.EncodeToString([]byte(forged))
	if _, err := s.Verify(strings.Join(parts, ".")); err == nil {
		t.Fatal("a token whose creation time was changed verified")
	}
	// checkEligible reads only the session and the item.
	e := &Edge{}
	it := seckill.Item{StartsAt: created.Add(24 * time.Hour), SaleRules: seckill.SaleRules{MinAccountAge: seckill.Duration(72 * time.Hour)}}
	if err := e.checkEligible(Session{UserID: 7, Created: created.UnixMilli()}, it); seckill.ErrorCode(err) != seckill.ENotEligible {
		t.Fatalf("account 1 day old, min 72h: %v", err)
	}
	it.StartsAt = created.Add(73 * time.Hour)
	if err := e.checkEligible(Session{UserID: 7, Created: created.UnixMilli()}, it); err != nil {
		t.Fatalf("account 73 h old, min 72h: %v", err)
	}
}
