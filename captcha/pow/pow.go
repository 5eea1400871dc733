// Package pow is the proof of work of docs/API.md: find a decimal answer
// such that SHA-256(seed + ":" + answer) has difficulty leading zero bits.
// Solve is what a client does (the storefront in JavaScript, lab, bench,
// the fault matrix and the tests in Go); Check is what the server does
// (package captcha, which keeps the challenges in Redis). This package
// links nothing but the standard library.
package pow

import (
	"crypto/sha256"
	"math/bits"
	"strconv"
)

// MaxAnswerLen is the longest answer Check accepts (a uint64 has at
// most 20 decimal digits).
const MaxAnswerLen = 20

// MaxDifficulty is the largest difficulty a challenge may ask for. At
// 32 bits a client needs about 4e9 hashes on average: more is useless.
const MaxDifficulty = 32

// LeadingZeroBits returns the number of leading zero bits of sum.
func LeadingZeroBits(sum []byte) int {
	n := 0
	for _, b := range sum {
		if b != 0 {
			return n + bits.LeadingZeros8(b)
		}
		n += 8
	}
	return n
}

// Solve returns the smallest non-negative decimal integer answer such
// that SHA-256(seed + ":" + answer) has at least difficulty leading zero
// bits. It is what a client does (in JavaScript in a browser); the server
// only uses it in tests and tools. A difficulty above 256 never ends.
func Solve(seed string, difficulty int) string {
	buf := make([]byte, 0, len(seed)+1+MaxAnswerLen)
	buf = append(buf, seed...)
	buf = append(buf, ':')
	base := len(buf)
	for n := uint64(0); ; n++ {
		buf = strconv.AppendUint(buf[:base], n, 10)
		sum := sha256.Sum256(buf)
		if LeadingZeroBits(sum[:]) >= difficulty {
			return string(buf[base:])
		}
	}
}

// Check reports whether answer solves the proof of work (seed,
// difficulty). The answer must be a decimal string of 1 to 20 ASCII digits,
// with nothing around it; a negative difficulty or one above 256 never
// passes.
func Check(seed, answer string, difficulty int) bool {
	if difficulty < 0 || difficulty > 256 || !isDigits(answer, MaxAnswerLen) {
		return false
	}
	h := sha256.New()
	h.Write([]byte(seed))
	h.Write([]byte{':'})
	h.Write([]byte(answer))
	var sum [sha256.Size]byte
	return LeadingZeroBits(h.Sum(sum[:0])) >= difficulty
}

// isDigits reports whether s is 1 to max ASCII digits.
func isDigits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
