package edge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"seckill"
)

// Session is who a request comes from.
type Session struct {
	UserID   int64  `json:"u"`
	Username string `json:"n"`
	Expires  int64  `json:"e"` // unix seconds
	// ID names this token among the user's (random, 96 bits): logout
	// revokes it. Empty in tokens made before revocation existed.
	ID string `json:"j,omitempty"`
	// IssuedAt is when the token was signed (unix ms): "log out
	// everywhere" refuses every token issued before a user's not-before.
	IssuedAt int64 `json:"i,omitempty"`
	// Created is when the account was made (unix ms) and Network its
	// registration network, as login read them: signed with the rest, so
	// eligibility (min_account_age, max_per_network) costs no I/O. Created
	// is 0 in tokens made before these claims, and in admin sessions of
	// accounts whose facts the edge was not told: such a session is
	// "unknown" and refused by every sale with eligibility rules.
	Created int64  `json:"c,omitempty"`
	Network string `json:"w,omitempty"`
}

// Account is the session's account as the backend is told of it with a
// reservation: CreatedAt zero when the token does not say.
func (s Session) Account() seckill.Account {
	a := seckill.Account{ID: s.UserID, Network: s.Network}
	if s.Created > 0 {
		a.CreatedAt = time.UnixMilli(s.Created).UTC()
	}
	return a
}

// sessionKey is one HMAC key: the signing key, or a previous one accepted
// until a time (secret rotation with an overlap window).
type sessionKey struct {
	id     string
	secret []byte
	until  time.Time // zero: no end (the signing key)
}

// Sessions signs and verifies session tokens:
//
//	kid "." base64url(JSON) "." base64url(HMAC-SHA256(kid "." payload))
//
// Tokens are stateless, so any edge with the same secret accepts them; the
// key id (derived from the secret) names the key that signed a token, so a
// secret can be rotated: the previous one stays accepted for an overlap
// window. Revoked tokens and users' not-before times come from an
// in-memory set (revocations) kept in step by Redis pub/sub: checking a
// token never calls Redis.
type Sessions struct {
	keys   []sessionKey // keys[0] signs
	ttl    time.Duration
	now    func() time.Time
	secure bool
	rev    *revocations

	// verified remembers tokens whose signature checked out (exact token
	// string -> session), so a client sending the same token again and
	// again (a bot, a poller) costs no HMAC and no JSON decode. Expiry, the
	// key's window and revocation are still checked on every use. Bounded:
	// cleared when full.
	mu       sync.RWMutex
	verified map[string]cachedSession
	byID     map[string]string // token id -> token, to purge a revoked one
}

type cachedSession struct {
	ses      Session
	keyUntil int64 // unix ms; 0: no end
}

const maxVerified = 100_000

// CookieName is the session cookie.
const CookieName = "seckill_session"

// NewSessions returns a signer. The secret should be at least 32 random
// bytes. secureCookie marks the cookie Secure (HTTPS only).
func NewSessions(secret []byte, ttl time.Duration, secureCookie bool) *Sessions {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &Sessions{keys: []sessionKey{{id: KeyID(secret), secret: secret}}, ttl: ttl, now: time.Now,
		secure: secureCookie, rev: newRevocations(), verified: map[string]cachedSession{}, byID: map[string]string{}}
}

// KeyID names a session secret without revealing it: 8 hex digits of a
// hash of it, the same on every edge.
func KeyID(secret []byte) string {
	h := sha256.Sum256(append([]byte("seckill session key id\x00"), secret...))
	return hex.EncodeToString(h[:4])
}

// AcceptPrevious makes tokens signed with a previous secret valid until
// the given time (the rotation's overlap window); new tokens are signed
// with the current secret only.
func (s *Sessions) AcceptPrevious(secret []byte, until time.Time) {
	if len(secret) == 0 || KeyID(secret) == s.keys[0].id {
		return
	}
	s.keys = append(s.keys, sessionKey{id: KeyID(secret), secret: secret, until: until})
}

var b64 = base64.RawURLEncoding.Strict() // strict: no two spellings of one token

// Sign returns a token for a user and its expiry. The token does not say
// when the account was made: sales with eligibility rules refuse it (use
// SignAccount).
func (s *Sessions) Sign(userID int64, username string) (string, time.Time) {
	return s.SignUntil(userID, username, s.now().Add(s.ttl))
}

// SignAccount returns a token for an account, carrying its creation time
// and network (the eligibility claims), and its expiry.
func (s *Sessions) SignAccount(a seckill.Account, username string) (string, time.Time) {
	return s.sign(a, username, s.now().Add(s.ttl))
}

// SignUntil returns a token that expires at exp.
func (s *Sessions) SignUntil(userID int64, username string, exp time.Time) (string, time.Time) {
	return s.sign(seckill.Account{ID: userID}, username, exp)
}

func (s *Sessions) sign(a seckill.Account, username string, exp time.Time) (string, time.Time) {
	exp = exp.Truncate(time.Second)
	var id [12]byte
	_, _ = rand.Read(id[:])
	ses := Session{UserID: a.ID, Username: username, Expires: exp.Unix(),
		ID: b64.EncodeToString(id[:]), IssuedAt: s.now().UnixMilli(), Network: a.Network}
	if a.Known() {
		ses.Created = max(a.CreatedAt.UnixMilli(), 1)
	}
	payload, _ := json.Marshal(ses)
	k := s.keys[0]
	signed := k.id + "." + b64.EncodeToString(payload)
	return signed + "." + b64.EncodeToString(mac(k.secret, signed)), exp
}

func mac(secret []byte, p string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(p))
	return m.Sum(nil)
}

var errBadSession = seckill.Errorf(seckill.EUnauthorized, "session is missing, invalid, expired or logged out")

// Verify checks a token: signature and key, then expiry, then revocation.
func (s *Sessions) Verify(token string) (Session, error) {
	bad := errBadSession
	if len(token) > 1024 {
		return Session{}, bad
	}
	s.mu.RLock()
	cs, ok := s.verified[token]
	s.mu.RUnlock()
	if !ok {
		var err error
		if cs, err = s.verify(token); err != nil {
			return Session{}, err
		}
		s.mu.Lock()
		if len(s.verified) >= maxVerified {
			clear(s.verified)
			clear(s.byID)
		}
		s.verified[token] = cs
		if cs.ses.ID != "" {
			s.byID[cs.ses.ID] = token
		}
		s.mu.Unlock()
	}
	now := s.now()
	if now.Unix() >= cs.ses.Expires || (cs.keyUntil != 0 && now.UnixMilli() >= cs.keyUntil) || s.rev.revoked(cs.ses) {
		return Session{}, bad
	}
	return cs.ses, nil
}

func (s *Sessions) verify(token string) (cachedSession, error) {
	bad := errBadSession
	var p, sig string
	var keys []sessionKey
	a, rest, ok := strings.Cut(token, ".")
	if !ok {
		return cachedSession{}, bad
	}
	if b, c, three := strings.Cut(rest, "."); three {
		for _, k := range s.keys {
			if k.id == a {
				keys = []sessionKey{k}
			}
		}
		p, sig = b, c
	} else { // a token from before key ids: any key in force may have signed it
		keys, p, sig = s.keys, a, rest
	}
	got, err := b64.DecodeString(sig)
	if len(keys) == 0 || err != nil {
		return cachedSession{}, bad
	}
	signed := token[:len(token)-len(sig)-1]
	var key *sessionKey
	for i := range keys {
		if hmac.Equal(got, mac(keys[i].secret, signed)) {
			key = &keys[i]
			break
		}
	}
	if key == nil {
		return cachedSession{}, bad
	}
	raw, err := b64.DecodeString(p)
	if err != nil {
		return cachedSession{}, bad
	}
	var ses Session
	if json.Unmarshal(raw, &ses) != nil || ses.UserID <= 0 || s.now().Unix() >= ses.Expires {
		return cachedSession{}, bad
	}
	cs := cachedSession{ses: ses}
	if !key.until.IsZero() {
		cs.keyUntil = key.until.UnixMilli()
	}
	return cs, nil
}

// purgeUser drops every cached token of a user (log out everywhere).
func (s *Sessions) purgeUser(userID int64) {
	s.mu.Lock()
	for tok, cs := range s.verified {
		if cs.ses.UserID == userID {
			delete(s.verified, tok)
			delete(s.byID, cs.ses.ID)
		}
	}
	s.mu.Unlock()
}

// purgeID drops the cached token with a token id (revoked).
func (s *Sessions) purgeID(id string) {
	s.mu.Lock()
	if tok, ok := s.byID[id]; ok {
		delete(s.verified, tok)
		delete(s.byID, id)
	}
	s.mu.Unlock()
}

// tokenFromRequest returns the raw token of a request: "Authorization:
// Bearer" or the cookie; never the query string.
func tokenFromRequest(r *http.Request) (string, bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(tok), true
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value, true
	}
	return "", false
}

// FromRequest reads the session from "Authorization: Bearer" or the
// cookie; never from the query string.
func (s *Sessions) FromRequest(r *http.Request) (Session, error) {
	tok, ok := tokenFromRequest(r)
	if !ok {
		return Session{}, seckill.Errorf(seckill.EUnauthorized, "no session: log in first")
	}
	return s.Verify(tok)
}

// Cookie returns the session cookie for a token.
func (s *Sessions) Cookie(token string, exp time.Time) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: token, Path: "/", Expires: exp, HttpOnly: true,
		Secure: s.secure, SameSite: http.SameSiteLaxMode}
}
