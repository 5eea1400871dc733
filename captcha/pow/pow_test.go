package pow

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestLeadingZeroBits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{[]byte{0x80}, 0},
		{[]byte{0xff, 0}, 0},
		{[]byte{0x40}, 1},
		{[]byte{0x01}, 7},
		{[]byte{0x00}, 8},
		{[]byte{0x00, 0x80}, 8},
		{[]byte{0x00, 0x0f}, 12},
		{[]byte{0x00, 0x00, 0x01}, 23},
		{[]byte{0, 0, 0, 0}, 32},
		{make([]byte, 32), 256},
	} {
		if got := LeadingZeroBits(tc.in); got != tc.want {
			t.Errorf("LeadingZeroBits(%x) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestPoW(t *testing.T) {
	t.Parallel()
	const seed, d = "c2VlZA", 12
	a := Solve(seed, d)
	if !Check(seed, a, d) {
		t.Fatalf("Solve answer %q does not pass Check", a)
	}
	sum := sha256.Sum256([]byte(seed + ":" + a))
	if LeadingZeroBits(sum[:]) < d {
		t.Fatalf("answer %q: only %d zero bits", a, LeadingZeroBits(sum[:]))
	}
	// Smallest: nothing below passes.
	for n := 0; ; n++ {
		s := itoa(n)
		if s == a {
			break
		}
		if Check(seed, s, d) {
			t.Fatalf("%s passes but Solve returned %s", s, a)
		}
	}
	for _, tc := range []struct {
		name, seed, answer string
		difficulty         int
		want               bool
	}{
		{"right", seed, a, d, true},
		{"other seed", seed + "x", a, d, false},
		{"wrong answer", seed, "0", d, false},
		{"zero difficulty", seed, "0", 0, true},
		{"empty", seed, "", 0, false},
		{"sign", seed, "+" + a, 0, false},
		{"negative", seed, "-1", 0, false},
		{"space", seed, " " + a, 0, false},
		{"hex", seed, "0x1f", 0, false},
		{"unicode digit", seed, "٣", 0, false},
		{"20 digits", seed, strings.Repeat("9", 20), 0, true},
		{"21 digits", seed, strings.Repeat("9", 21), 0, false},
		{"negative difficulty", seed, a, -1, false},
		{"difficulty above 256", seed, a, 257, false},
	} {
		if got := Check(tc.seed, tc.answer, tc.difficulty); got != tc.want {
			t.Errorf("%s: Check(%q, %q, %d) = %v, want %v", tc.name, tc.seed, tc.answer, tc.difficulty, got, tc.want)
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func FuzzCheck(f *testing.F) {
	f.Add("seed", "0", 4)
	f.Add("", "", 0)
	f.Add("s", strings.Repeat("1", 25), 300)
	f.Add("s", "-5", -3)
	f.Fuzz(func(t *testing.T, seed, answer string, difficulty int) {
		ok := Check(seed, answer, difficulty)
		if ok && (len(answer) == 0 || len(answer) > MaxAnswerLen || strings.Trim(answer, "0123456789") != "") {
			t.Fatalf("Check accepted %q", answer)
		}
		if ok && difficulty > 0 {
			sum := sha256.Sum256([]byte(seed + ":" + answer))
			if LeadingZeroBits(sum[:]) < difficulty {
				t.Fatalf("Check(%q, %q, %d) passed with %d bits", seed, answer, difficulty, LeadingZeroBits(sum[:]))
			}
		}
	})
}
