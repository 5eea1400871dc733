// Package clientip resolves the address of the client behind an HTTP
// request, trusting X-Forwarded-For only when it was written by a configured
// proxy, and derives the rate-limit key of that client.
//
// Policy (see /work/shared/notes/pitfalls.md, "Rate limiting and anti-bot
// conventions"): X-Forwarded-For is trusted only from configured proxy
// addresses, and IPv6 clients are grouped by /64 because a single subscriber
// usually owns a whole /64 and can rotate addresses inside it at will.
package clientip

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// maxHops bounds the number of X-Forwarded-For entries examined, so a huge
// forged header costs O(maxHops), not O(header size).
const maxHops = 64

// Resolver finds the client address of a request. It is immutable after New
// and safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that trusts the given proxies. Each entry is a CIDR
// ("10.0.0.0/8", "2001:db8::/48") or a single address ("192.0.2.7"). An
// invalid entry is an error naming it. IPv4-mapped IPv6 entries are unmapped;
// zones are rejected.
func New(trusted []string) (*Resolver, error) {
	r := &Resolver{}
	for i, s := range trusted {
		s = strings.TrimSpace(s)
		p, err := parseTrusted(s)
		if err != nil {
			return nil, fmt.Errorf("clientip: trusted proxy #%d %q: %w", i, s, err)
		}
		r.trusted = append(r.trusted, p)
	}
	return r, nil
}

func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("zones are not supported")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR: %w", err)
		}
		a := p.Addr()
		if a.Is4In6() {
			bits := p.Bits() - 96
			if bits < 0 {
				return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix shorter than /96")
			}
			p = netip.PrefixFrom(a.Unmap(), bits)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR: %w", err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Trusted reports whether a is a configured trusted proxy.
func (r *Resolver) Trusted(a netip.Addr) bool {
	if r == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client address of req: the peer address
// (req.RemoteAddr), unless the peer is a trusted proxy, in which case
// X-Forwarded-For is walked from the right, skipping trusted hops, and the
// first untrusted address is returned. On a malformed entry the walk stops
// and the last good address (a trusted hop, or the peer) is returned; if
// every hop is trusted the leftmost one is returned. X-Forwarded-For from an
// untrusted peer is never looked at.
//
// The result is unmapped (IPv4-mapped IPv6 becomes IPv4) and has no zone. It
// is the zero Addr when RemoteAddr cannot be parsed (e.g. a unix socket);
// Key maps the zero Addr to one shared key.
func (r *Resolver) ClientIP(req *http.Request) netip.Addr {
	peer := parseHost(req.RemoteAddr)
	if !peer.IsValid() || !r.Trusted(peer) {
		return peer
	}
	return walkXFF(req.Header.Values("X-Forwarded-For"), peer, r.Trusted)
}

// walkXFF walks the X-Forwarded-For field lines (in received order) from the
// right. current starts as the (trusted) peer.
func walkXFF(lines []string, current netip.Addr, trusted func(netip.Addr) bool) netip.Addr {
	hops := 0
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			hops++
			if hops > maxHops {
				return current
			}
			a := parseHost(strings.TrimSpace(entry))
			if !a.IsValid() {
				return current // malformed: stop, keep the last good one
			}
			current = a
			if !trusted(a) {
				return a
			}
			if rest == "" {
				break
			}
		}
	}
	return current
}

// parseHost parses "ip", "ip:port", "[ipv6]:port" or "[ipv6]". It returns the
// zero Addr on failure. The result is unmapped and zone-less.
func parseHost(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return clean(a)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return clean(ap.Addr())
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return clean(a)
		}
	}
	return netip.Addr{}
}

func clean(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// Key returns the rate-limit key of a client address: an IPv4 address as is
// ("192.0.2.1"), an IPv4-mapped IPv6 address unmapped, and an IPv6 address
// grouped by its /64 ("2001:db8:1:2::/64"). The zero Addr maps to "invalid",
// so unparsable peers share one bucket instead of escaping the limit.
func Key(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	a = clean(a)
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}

// Network returns the network a client address belongs to for the
// per-network account budgets and the network stored on an account: the
// /24 of an IPv4 address ("192.0.2.0/24") and the /48 of an IPv6 address
// ("2001:db8:1::/48"), unmapped. The zero Addr maps to "invalid", like
// Key, so unparsable peers share one network instead of escaping.
func Network(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	a = clean(a)
	bits := 48
	if a.Is4() {
		bits = 24
	}
	return netip.PrefixFrom(a, bits).Masked().String()
}
