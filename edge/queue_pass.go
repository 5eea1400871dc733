package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// admissionPasses sign and verify admission passes: what an admitted user
// of a waiting room shows to get a challenge, a path and a purchase.
//
//	base64url("<user>.<item>.<until unix ms>") "." base64url(HMAC-SHA256(key, payload))
//
// The key is derived from the session secret (a separate purpose, so a
// pass is never a session token and the reverse), so every edge with the
// same secret verifies a pass without Redis; passes signed under the
// previous session secret are accepted too (rotation).
type admissionPasses struct {
	keys [][]byte // keys[0] signs
	now  func() time.Time
}

func newAdmissionPasses(secret, previous []byte) *admissionPasses {
	p := &admissionPasses{now: time.Now}
	for _, s := range [][]byte{secret, previous} {
		if len(s) == 0 {
			continue
		}
		m := hmac.New(sha256.New, s)
		m.Write([]byte("seckill admission pass v1"))
		p.keys = append(p.keys, m.Sum(nil))
	}
	return p
}

func passMAC(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// sign returns the pass of user for item, valid until until.
func (p *admissionPasses) sign(user, item int64, until time.Time) string {
	payload := strconv.FormatInt(user, 10) + "." + strconv.FormatInt(item, 10) + "." + strconv.FormatInt(until.UnixMilli(), 10)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(passMAC(p.keys[0], payload))
}

// maxPassLen bounds what verify reads.
const maxPassLen = 200

// verify reports whether pass admits user to item now.
func (p *admissionPasses) verify(pass string, user, item int64) bool {
	if len(pass) > maxPassLen || len(p.keys) == 0 {
		return false
	}
	b64, macB64, ok := strings.Cut(pass, ".")
	if !ok {
		return false
	}
	enc := base64.RawURLEncoding.Strict()
	raw, err1 := enc.DecodeString(b64)
	mac, err2 := enc.DecodeString(macB64)
	if err1 != nil || err2 != nil {
		return false
	}
	payload := string(raw)
	good := false
	for _, k := range p.keys {
		if hmac.Equal(mac, passMAC(k, payload)) {
			good = true
		}
	}
	if !good {
		return false
	}
	f := strings.Split(payload, ".")
	if len(f) != 3 {
		return false
	}
	u, err1 := strconv.ParseInt(f[0], 10, 64)
	i, err2 := strconv.ParseInt(f[1], 10, 64)
	until, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	return u == user && i == item && p.now().UnixMilli() < until
}
