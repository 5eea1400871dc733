package limit

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SetHeaders writes the quota of d's rule to h, following
// draft-ietf-httpapi-ratelimit-headers-11 ("RateLimit header fields for
// HTTP", May 2026), sections 3 and 4:
//
//	RateLimit-Policy: "buy-per-user";q=100;w=60
//	RateLimit: "buy-per-user";r=50;t=30
//
// Both are Structured Field Lists whose items are Strings (the policy name):
// q is the quota (Burst), w the window in whole seconds (Burst/Rate, rounded
// up, at least 1), r the remaining quota and t the effective window in whole
// seconds (Reset, rounded up). When refused it also sets Retry-After in whole
// seconds, rounded up, at least 1. Nothing is written when no enforced rule
// applied (d.Rule == ""). Shadow rules are never advertised.
func (d Decision) SetHeaders(h http.Header) {
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10))
	}
	if d.Rule == "" {
		return
	}
	name := sfString(d.Rule)
	h.Set("RateLimit-Policy", name+";q="+strconv.Itoa(d.Limit)+";w="+strconv.FormatInt(max(ceilSeconds(d.Window), 1), 10))
	h.Set("RateLimit", name+";r="+strconv.Itoa(max(d.Remaining, 0))+";t="+strconv.FormatInt(ceilSeconds(d.Reset), 10))
}

// ceilSeconds rounds d up to whole seconds, ignoring up to a microsecond of
// floating-point noise (100 tokens at 100/60 per second is a 60 s window,
// not 61).
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - time.Microsecond) / time.Second)
}

// sfString serializes s as a Structured Field String (RFC 9651 section
// 4.1.6): printable ASCII, with '"' and '\' escaped; other bytes are
// replaced by '?'. Validated rule names never need either.
func sfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
