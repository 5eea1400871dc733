package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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
}

// Sessions signs and verifies session tokens: base64url(JSON) "." base64url(HMAC-SHA256).
// Tokens are stateless, so any edge with the same secret accepts them.
type Sessions struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	secure bool

	// verified remembers tokens whose signature checked out (exact token
	// string -> session), so a client sending the same token again and
	// again (a bot, a poller) costs no HMAC and no JSON decode. Expiry is
	// still checked on every use. Bounded: cleared when full.
	mu       sync.RWMutex
	verified map[string]Session
}

const maxVerified = 100_000

// CookieName is the session cookie.
const CookieName = "seckill_session"

// NewSessions returns a signer. The secret should be at least 32 random bytes.
func NewSessions(secret []byte, ttl time.Duration, secureCookie bool) *Sessions {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &Sessions{secret: secret, ttl: ttl, now: time.Now, secure: secureCookie, verified: map[string]Session{}}
}

var b64 = base64.RawURLEncoding.Strict() // strict: no two spellings of one token

// Sign returns a token for a user and its expiry.
func (s *Sessions) Sign(userID int64, username string) (string, time.Time) {
	return s.SignUntil(userID, username, s.now().Add(s.ttl))
}

// SignUntil returns a token that expires at exp.
func (s *Sessions) SignUntil(userID int64, username string, exp time.Time) (string, time.Time) {
	exp = exp.Truncate(time.Second)
	payload, _ := json.Marshal(Session{UserID: userID, Username: username, Expires: exp.Unix()})
	p := b64.EncodeToString(payload)
	return p + "." + b64.EncodeToString(s.mac(p)), exp
}

func (s *Sessions) mac(p string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(p))
	return m.Sum(nil)
}

var errBadSession = seckill.Errorf(seckill.EUnauthorized, "session is missing, invalid or expired")

// Verify checks a token: signature, then expiry.
func (s *Sessions) Verify(token string) (Session, error) {
	bad := errBadSession
	if len(token) > 1024 {
		return Session{}, bad
	}
	s.mu.RLock()
	ses, ok := s.verified[token]
	s.mu.RUnlock()
	if ok {
		if s.now().Unix() >= ses.Expires {
			return Session{}, bad
		}
		return ses, nil
	}
	ses, err := s.verify(token)
	if err != nil {
		return Session{}, err
	}
	s.mu.Lock()
	if len(s.verified) >= maxVerified {
		clear(s.verified)
	}
	s.verified[token] = ses
	s.mu.Unlock()
	return ses, nil
}

func (s *Sessions) verify(token string) (Session, error) {
	bad := errBadSession
	p, sig, ok := strings.Cut(token, ".")
	if !ok {
		return Session{}, bad
	}
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(p)) {
		return Session{}, bad
	}
	raw, err := b64.DecodeString(p)
	if err != nil {
		return Session{}, bad
	}
	var ses Session
	if json.Unmarshal(raw, &ses) != nil || ses.UserID <= 0 || s.now().Unix() >= ses.Expires {
		return Session{}, bad
	}
	return ses, nil
}

// FromRequest reads the session from "Authorization: Bearer" or the
// cookie; never from the query string.
func (s *Sessions) FromRequest(r *http.Request) (Session, error) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return s.Verify(strings.TrimSpace(tok))
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return s.Verify(c.Value)
	}
	return Session{}, seckill.Errorf(seckill.EUnauthorized, "no session: log in first")
}

// Cookie returns the session cookie for a token.
func (s *Sessions) Cookie(token string, exp time.Time) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: token, Path: "/", Expires: exp, HttpOnly: true,
		Secure: s.secure, SameSite: http.SameSiteLaxMode}
}
