package clientip

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		trusted []string
		wantErr string // substring; "" = no error
	}{
		{desc: "cidrs and single ips", trusted: []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"}},
		{desc: "mapped prefix unmapped", trusted: []string{"::ffff:10.0.0.0/104"}},
		{desc: "garbage entry named", trusted: []string{"10.0.0.1", "proxy.local"}, wantErr: `"proxy.local"`},
		{desc: "bad prefix length", trusted: []string{"10.0.0.0/33"}, wantErr: `"10.0.0.0/33"`},
		{desc: "zone rejected", trusted: []string{"fe80::1%eth0"}, wantErr: "zone"},
		{desc: "empty entry", trusted: []string{""}, wantErr: `#0 ""`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.trusted)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("New(%q) = %v, want nil", tc.trusted, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("New(%q) = %v, want error containing %q", tc.trusted, err, tc.wantErr)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	r, err := New([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8:ffff::/48"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc   string
		remote string
		xff    []string // header lines
		want   string   // "" = zero Addr
	}{
		{desc: "no proxy", remote: "198.51.100.1:1234", want: "198.51.100.1"},
		{desc: "spoofed xff from untrusted peer ignored", remote: "198.51.100.1:1234", xff: []string{"1.1.1.1"}, want: "198.51.100.1"},
		{desc: "spoofed trusted-looking xff from untrusted peer ignored", remote: "198.51.100.1:1234", xff: []string{"10.0.0.9"}, want: "198.51.100.1"},
		{desc: "one trusted proxy", remote: "10.0.0.2:80", xff: []string{"203.0.113.5"}, want: "203.0.113.5"},
		{desc: "client spoof prefix left of real client", remote: "10.0.0.2:80", xff: []string{"6.6.6.6, 203.0.113.5"}, want: "203.0.113.5"},
		{desc: "chain through 2 trusted proxies", remote: "10.0.0.2:80", xff: []string{"6.6.6.6, 203.0.113.5, 192.0.2.7"}, want: "203.0.113.5"},
		{desc: "chain split over header lines", remote: "10.0.0.2:80", xff: []string{"6.6.6.6, 203.0.113.5", "192.0.2.7"}, want: "203.0.113.5"},
		{desc: "trusted peer without xff", remote: "10.0.0.2:80", want: "10.0.0.2"},
		{desc: "all hops trusted: leftmost", remote: "10.0.0.2:80", xff: []string{"10.1.1.1, 192.0.2.7"}, want: "10.1.1.1"},
		{desc: "garbage xff: peer", remote: "10.0.0.2:80", xff: []string{"not-an-ip"}, want: "10.0.0.2"},
		{desc: "garbage after trusted hop: last good", remote: "10.0.0.2:80", xff: []string{"203.0.113.5, junk, 192.0.2.7"}, want: "192.0.2.7"},
		{desc: "empty element stops", remote: "10.0.0.2:80", xff: []string{"203.0.113.5,,"}, want: "10.0.0.2"},
		{desc: "unknown token", remote: "10.0.0.2:80", xff: []string{"unknown"}, want: "10.0.0.2"},
		{desc: "entry with port", remote: "10.0.0.2:80", xff: []string{"203.0.113.5:4711"}, want: "203.0.113.5"},
		{desc: "bracketed ipv6 entry", remote: "10.0.0.2:80", xff: []string{"[2001:db8:1:2::9]:443"}, want: "2001:db8:1:2::9"},
		{desc: "ipv6 client via trusted ipv6 proxy", remote: "[2001:db8:ffff::1]:443", xff: []string{"2001:db8:1:2::9, 2001:db8:ffff::2"}, want: "2001:db8:1:2::9"},
		{desc: "mapped peer unmapped and trusted", remote: "[::ffff:10.0.0.2]:80", xff: []string{"203.0.113.5"}, want: "203.0.113.5"},
		{desc: "mapped xff entry unmapped", remote: "10.0.0.2:80", xff: []string{"::ffff:203.0.113.5"}, want: "203.0.113.5"},
		{desc: "remote without port", remote: "198.51.100.1", want: "198.51.100.1"},
		{desc: "unparsable remote", remote: "@", xff: []string{"1.1.1.1"}, want: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			got := r.ClientIP(req)
			if tc.want == "" {
				if got.IsValid() {
					t.Fatalf("ClientIP = %v, want zero", got)
				}
				return
			}
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("ClientIP = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		addr netip.Addr
		want string
	}{
		{desc: "ipv4 as is", addr: netip.MustParseAddr("192.0.2.1"), want: "192.0.2.1"},
		{desc: "mapped unmapped", addr: netip.MustParseAddr("::ffff:192.0.2.1"), want: "192.0.2.1"},
		{desc: "ipv6 grouped by /64", addr: netip.MustParseAddr("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), want: "2001:db8:1:2::/64"},
		{desc: "same /64 same key", addr: netip.MustParseAddr("2001:db8:1:2::1"), want: "2001:db8:1:2::/64"},
		{desc: "zone dropped", addr: netip.MustParseAddr("fe80::1%eth0"), want: "fe80::/64"},
		{desc: "loopback v6", addr: netip.MustParseAddr("::1"), want: "::/64"},
		{desc: "zero addr shared key", addr: netip.Addr{}, want: "invalid"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if got := Key(tc.addr); got != tc.want {
				t.Fatalf("Key(%v) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}

// FuzzWalkXFF checks the X-Forwarded-For parser never panics, that an
// untrusted peer is always returned as is, and that the result is either the
// peer or an address literally present in the header.
func FuzzWalkXFF(f *testing.F) {
	for _, s := range []string{"", "1.2.3.4", "1.2.3.4, 10.0.0.1", "junk,10.0.0.1", ",,,", "[::1]:80, ::ffff:1.2.3.4", strings.Repeat("10.0.0.1,", 100)} {
		f.Add(s, true)
		f.Add(s, false)
	}
	r, err := New([]string{"10.0.0.0/8"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xff string, trustedPeer bool) {
		req := httptest.NewRequest("GET", "/", nil)
		peer := "198.51.100.1"
		if trustedPeer {
			peer = "10.9.9.9"
		}
		req.RemoteAddr = peer + ":1"
		req.Header.Set("X-Forwarded-For", xff)
		got := r.ClientIP(req)
		if !got.IsValid() {
			t.Fatalf("invalid result for %q", xff)
		}
		if !trustedPeer && got.String() != peer {
			t.Fatalf("untrusted peer: got %v", got)
		}
		if got.String() == peer {
			return
		}
		found := false
		for _, e := range strings.Split(xff, ",") {
			if parseHost(strings.TrimSpace(e)) == got {
				found = true
			}
		}
		if !found {
			t.Fatalf("result %v not in header %q", got, xff)
		}
	})
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ desc, in, want string }{
		{"ipv4", "192.0.2.77", "192.0.2.0/24"},
		{"ipv4 mapped", "::ffff:192.0.2.77", "192.0.2.0/24"},
		{"ipv6", "2001:db8:1:2:3:4:5:6", "2001:db8:1::/48"},
		{"ipv6 zone", "fe80::1%eth0", "fe80::/48"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := Network(netip.MustParseAddr(tc.in)); got != tc.want {
				t.Errorf("Network(%s) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := Network(netip.Addr{}); got != "invalid" {
		t.Errorf("Network(zero) = %q, want invalid", got)
	}
}
