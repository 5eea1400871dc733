// Package draw is the verifiable draw of issue 17 (allocation "draw"): the
// commitment to a secret seed, the pseudonymous entry ids, the hash of the
// entry list, the ranking of the entries derived from the seed and that
// hash, and the schedule of claim windows. It is the algorithm written out
// in docs/API.md ("The draw"), standard library only, so anybody can read
// it next to the documentation; the python3 verifier there must agree with
// it (draw_test.go runs it).
package draw

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
)

// Size is the length in bytes of a seed, a key, an entry id and every hash.
const Size = sha256.Size

// ID is a pseudonymous entry id, a list hash or a seed: 32 bytes.
type ID [Size]byte

// String is the lowercase hex of id, as the API publishes it.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID reads 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != Size {
		return id, fmt.Errorf("reading id %q: want %d hex digits", s, 2*Size)
	}
	copy(id[:], b)
	return id, nil
}

// NewSecret returns 32 random bytes: a seed or a per-item key.
func NewSecret() (ID, error) {
	var s ID
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("making a secret: %w", err)
	}
	return s, nil
}

// Commitment is SHA-256(seed): published when the sale is created, long
// before the seed is revealed.
func Commitment(seed ID) ID { return sha256.Sum256(seed[:]) }

// EntryID is the pseudonymous id of a user in one draw:
// HMAC-SHA256(key, the user id in ASCII decimal). The key is secret and
// never published, so the list of ids does not say who entered.
func EntryID(key ID, userID int64) ID {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(strconv.FormatInt(userID, 10)))
	var id ID
	copy(id[:], m.Sum(nil))
	return id
}

// Sort sorts ids in ascending byte order (the order of their hex too).
func Sort(ids []ID) {
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
}

// ListHash is SHA-256 of the sorted ids' 32 raw bytes each, concatenated
// (SHA-256 of nothing for no entries). ids must be sorted.
func ListHash(ids []ID) ID {
	h := sha256.New()
	for _, id := range ids {
		h.Write(id[:])
	}
	var out ID
	copy(out[:], h.Sum(nil))
	return out
}

// stream is the SHA-256 counter stream: block c is SHA-256(d ‖ c as 8
// bytes big-endian), c = 0, 1, ...; each block gives four 64-bit words,
// big-endian, taken in order.
type stream struct {
	d     ID
	c     uint64
	block [Size]byte
	off   int
}

func newStream(seed, list ID) *stream {
	var in [2 * Size]byte
	copy(in[:Size], seed[:])
	copy(in[Size:], list[:])
	return &stream{d: sha256.Sum256(in[:]), off: Size}
}

func (s *stream) word() uint64 {
	if s.off == Size {
		var in [Size + 8]byte
		copy(in[:Size], s.d[:])
		binary.BigEndian.PutUint64(in[Size:], s.c)
		s.block = sha256.Sum256(in[:])
		s.c++
		s.off = 0
	}
	w := binary.BigEndian.Uint64(s.block[s.off:])
	s.off += 8
	return w
}

// uniform returns a number in [0, m) without modulo bias: words at or
// above 2^64 - (2^64 mod m) are skipped.
func (s *stream) uniform(m uint64) uint64 {
	t := -m % m // 2^64 mod m
	for {
		w := s.word()
		if t == 0 || w < -t { // -t is 2^64 - t
			return w % m
		}
	}
}

// Rank returns the first k places of the draw: ids (sorted, distinct) are
// shuffled by Fisher–Yates driven by the stream of SHA-256(seed ‖ list),
// list = ListHash(ids): for i = 0 .. n-2, j = i + uniform(n-i), swap ids[i]
// and ids[j]. Stopping after the first k places gives the same first k as
// the whole shuffle. ids is not changed.
func Rank(seed ID, ids []ID, k int) []ID {
	n := len(ids)
	k = min(k, n)
	a := slices.Clone(ids)
	s := newStream(seed, ListHash(ids))
	for i := 0; i < min(k, n-1); i++ {
		j := i + int(s.uniform(uint64(n-i)))
		a[i], a[j] = a[j], a[i]
	}
	return a[:k]
}
