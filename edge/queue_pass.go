package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// signer signs short payloads for one purpose:
//
//	base64url(payload) "." base64url(HMAC-SHA256(key, payload))
//
// Its keys are derived from the session secret and the purpose, so a token
// of one purpose is never valid for another (nor as a session token), and
// every edge with the same secret verifies it without Redis; tokens signed
// under the previous session secret are accepted too (rotation).
type signer struct {
	keys [][]byte     // keys[0] signs
	macs []*sync.Pool // per key: HMAC states to reuse (a poll checks one per request)
}

func newSigner(purpose string, secret, previous []byte) signer {
	var s signer
	for _, sec := range [][]byte{secret, previous} {
		if len(sec) == 0 {
			continue
		}
		m := hmac.New(sha256.New, sec)
		m.Write([]byte(purpose))
		key := m.Sum(nil)
		s.keys = append(s.keys, key)
		s.macs = append(s.macs, &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }})
	}
	return s
}

// mac is HMAC-SHA256(keys[i], payload), written into out.
func (s signer) mac(i int, payload string, out *[sha256.Size]byte) []byte {
	m := s.macs[i].Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(payload))
	sum := m.Sum(out[:0])
	s.macs[i].Put(m)
	return sum
}

func (s signer) sign(payload string) string {
	enc := base64.RawURLEncoding
	var out [sha256.Size]byte
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(s.mac(0, payload, &out))
}

// maxTokenLen bounds what open reads (a poll token with the longest ids
// and place is about 210 bytes).
const maxTokenLen = 256

// open returns the payload of a token signed by one of the keys.
func (s signer) open(tok string) (string, bool) {
	if len(tok) > maxTokenLen || len(s.keys) == 0 {
		return "", false
	}
	b64, macB64, ok := strings.Cut(tok, ".")
	if !ok {
		return "", false
	}
	enc := base64.RawURLEncoding.Strict()
	raw, err1 := enc.DecodeString(b64)
	mac, err2 := enc.DecodeString(macB64)
	if err1 != nil || err2 != nil {
		return "", false
	}
	payload := string(raw)
	var out [sha256.Size]byte
	for i := range s.keys {
		if hmac.Equal(mac, s.mac(i, payload, &out)) {
			return payload, true
		}
	}
	return "", false
}

// admissionPasses sign and verify admission passes: what an admitted user
// of a waiting room shows to get a challenge, a path and a purchase. The
// payload is "<user>.<item>.<until unix ms>".
type admissionPasses struct {
	s   signer
	now func() time.Time
}

func newAdmissionPasses(secret, previous []byte) *admissionPasses {
	return &admissionPasses{s: newSigner("seckill admission pass v1", secret, previous), now: time.Now}
}

// sign returns the pass of user for item, valid until until.
func (p *admissionPasses) sign(user, item int64, until time.Time) string {
	return p.s.sign(strconv.FormatInt(user, 10) + "." + strconv.FormatInt(item, 10) + "." + strconv.FormatInt(until.UnixMilli(), 10))
}

// verify reports whether pass admits user to item now.
func (p *admissionPasses) verify(pass string, user, item int64) bool {
	payload, ok := p.s.open(pass)
	if !ok {
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

// pollTokens sign and open the poll tokens of a waiting room: a waiting
// ticket's place, so an edge can tell where it stands from its cached view
// of the queue (queueView) without Redis. The payload is
// "<user>.<item>.<ticket id>.<issued>.<run>.<place>"; a token holds the
// place its ticket had when it was signed (a ticket placed again gets a
// new token), when, by Redis's clock, in ms, and on which Redis server
// (the start of its run_id, as the signing edge knew it): the script that
// answered then had the ticket waiting there and counted a poll of it
// (roomView.record). Tokens of earlier versions (v1 without issued and
// run, v2 without run) no longer open: their polls go to the script, which
// answers a new one.
type pollTokens struct {
	s    signer
	seen *openedTokens
}

func newPollTokens(secret, previous []byte) pollTokens {
	return pollTokens{s: newSigner("seckill waiting room poll token v3", secret, previous), seen: newOpenedTokens()}
}

// openedTokens remembers the poll tokens an edge opened, by their MAC:
// a waiting ticket shows the same token at each poll, and checking its
// HMAC (with the decoding and parsing) was a tenth of a poll answered from
// the view. Only tokens whose HMAC checked are remembered, with a keyed
// 64-bit hash of their payload (maphash, a seed of this process), so a
// token with a remembered MAC and a changed payload is not taken for the
// one remembered: it is checked, and refused. At most maxOpened: two
// generations, the older dropped when the newer is full (about 150 bytes
// a token; a room of 100,000 waiting tickets polling every minute stays
// remembered).
type openedTokens struct {
	mu       sync.Mutex
	seed     maphash.Seed
	cur, old map[string]openedToken
}

type openedToken struct {
	payload uint64 // maphash of the payload's base64
	tok     pollToken
}

const maxOpened = 400_000

func newOpenedTokens() *openedTokens { return &openedTokens{seed: maphash.MakeSeed()} }

// get returns the token of payload (base64) and mac when remembered.
func (o *openedTokens) get(payload, mac string) (pollToken, bool) {
	h := maphash.String(o.seed, payload)
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.cur[mac]
	if !ok {
		if t, ok = o.old[mac]; ok {
			o.putLocked(mac, t)
		}
	}
	return t.tok, ok && t.payload == h
}

func (o *openedTokens) put(payload, mac string, t pollToken) {
	h := maphash.String(o.seed, payload)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.putLocked(strings.Clone(mac), openedToken{payload: h, tok: t})
}

func (o *openedTokens) putLocked(mac string, t openedToken) {
	if o.cur == nil || len(o.cur) >= maxOpened/2 {
		o.old, o.cur = o.cur, make(map[string]openedToken, 1024)
	}
	o.cur[mac] = t
}

// pollToken is what a poll token says.
type pollToken struct {
	User, Item int64
	Ticket     string
	Place      float64
	Issued     time.Time // Redis's clock when signed (ms; zero: not told)
	Run        string    // the Redis server's run_id (its first runLen hex digits; "": not known)
}

func (p pollTokens) sign(t pollToken) string {
	var issued int64
	if !t.Issued.IsZero() {
		issued = t.Issued.UnixMilli()
	}
	return p.s.sign(strconv.FormatInt(t.User, 10) + "." + strconv.FormatInt(t.Item, 10) + "." + t.Ticket + "." +
		strconv.FormatInt(issued, 10) + "." + t.Run + "." + strconv.FormatFloat(t.Place, 'g', -1, 64))
}

// open returns the token of user for item (false when forged, of another
// user or item, or malformed).
func (p pollTokens) open(tok string, user, item int64) (pollToken, bool) {
	if len(tok) > maxTokenLen {
		return pollToken{}, false
	}
	payload, mac, _ := strings.Cut(tok, ".")
	t, ok := pollToken{}, false
	if p.seen != nil && mac != "" {
		t, ok = p.seen.get(payload, mac)
	}
	if !ok {
		if t, ok = p.verify(tok); !ok {
			return pollToken{}, false
		}
		if p.seen != nil {
			p.seen.put(payload, mac, t)
		}
	}
	if t.User != user || t.Item != item {
		return pollToken{}, false
	}
	return t, true
}

// verify checks a token's HMAC and reads it.
func (p pollTokens) verify(tok string) (pollToken, bool) {
	payload, ok := p.s.open(tok)
	if !ok {
		return pollToken{}, false
	}
	f := strings.SplitN(payload, ".", 6)
	if len(f) != 6 || f[2] == "" || len(f[4]) > runLen {
		return pollToken{}, false
	}
	u, err1 := strconv.ParseInt(f[0], 10, 64)
	i, err2 := strconv.ParseInt(f[1], 10, 64)
	issued, err3 := strconv.ParseInt(f[3], 10, 64)
	place, err4 := strconv.ParseFloat(f[5], 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || issued < 0 {
		return pollToken{}, false
	}
	t := pollToken{User: u, Item: i, Ticket: f[2], Place: place, Run: f[4]}
	if issued > 0 {
		t.Issued = time.UnixMilli(issued)
	}
	return t, true
}
