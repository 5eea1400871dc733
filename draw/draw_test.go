package draw

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// VerifierSource returns the python3 program of docs/DRAW.md ("Verify it
// yourself"): the first ```python block that starts with "# verify_draw.py".
func VerifierSource(t testing.TB) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "DRAW.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```python\n# verify_draw.py")
	if !ok {
		t.Fatal("docs/DRAW.md has no ```python block starting with # verify_draw.py")
	}
	src, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the python block of docs/DRAW.md does not end")
	}
	return "# verify_draw.py" + src
}

// runVerifier runs the documented program on a draw and an entry list,
// as JSON documents, and returns its winners and waitlist.
func runVerifier(t *testing.T, draw, entries any) (winners, waitlist []string) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	prog := filepath.Join(dir, "verify_draw.py")
	if err := os.WriteFile(prog, []byte(VerifierSource(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, prog, write("draw.json", draw), write("entries.json", entries))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 verify_draw.py: %v\n%s", err, stderr.String())
	}
	var res struct{ Winners, Waitlist []string }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("verifier printed %q: %v", out, err)
	}
	return res.Winners, res.Waitlist
}

func hexes(ids []ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// TestPythonAgrees runs the documented python3 program against Rank on
// lists of several sizes (none, one, a few, many, and sizes around the
// places drawn).
func TestPythonAgrees(t *testing.T) {
	var key ID
	key[0] = 7
	for _, c := range []struct{ n, stock, waitlist int }{{0, 3, 1}, {1, 1, 0}, {2, 5, 5}, {7, 3, 2}, {100, 10, 5}, {1000, 100, 50}} {
		seed, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]ID, c.n)
		for i := range ids {
			ids[i] = EntryID(key, int64(i+1))
		}
		Sort(ids)
		order := Rank(seed, ids, c.stock+c.waitlist)
		h := ListHash(ids)
		com := Commitment(seed)
		d := map[string]any{"seed": seed.String(), "commitment": com.String(), "entries_hash": h.String(),
			"stock": c.stock, "waitlist": c.waitlist, "order": hexes(order)}
		e := map[string]any{"entries_hash": h.String(), "entries": hexes(ids)}
		winners, waitlist := runVerifier(t, d, e)
		k := min(c.stock, len(order))
		if !slices.Equal(winners, hexes(order[:k])) || !slices.Equal(waitlist, hexes(order[k:])) {
			t.Errorf("n=%d: python says winners %v waitlist %v, Go %v", c.n, winners, waitlist, hexes(order))
		}
	}
}

// TestKnownVector pins the algorithm: a change to any byte layout changes
// these places (and the documentation must change with it).
func TestKnownVector(t *testing.T) {
	var seed, key ID
	for i := range seed {
		seed[i], key[i] = byte(i), byte(255-i)
	}
	ids := make([]ID, 5)
	for i := range ids {
		ids[i] = EntryID(key, int64(i+1))
	}
	Sort(ids)
	got := hexes(Rank(seed, ids, 5))
	if c := Commitment(seed).String(); c != "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd" {
		t.Errorf("commitment = %s", c)
	}
	want := []string{"3a775eee7499fedb", "c31beb93819364a9", "227635fb08f56291", "de43f4df975b7be1", "62f9836acfa9df37"}
	for i, id := range got {
		if id[:16] != want[i] {
			t.Errorf("place %d = %s…, want %s…", i+1, id[:16], want[i])
		}
	}
	full := hexes(Rank(seed, ids, 5))
	if part := hexes(Rank(seed, ids, 2)); !slices.Equal(part, full[:2]) {
		t.Errorf("the first 2 places %v differ from the whole shuffle's %v", part, full[:2])
	}
	// The order is a permutation of the list.
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if !slices.Equal(sorted, hexes(ids)) {
		t.Errorf("order %v is not a permutation of %v", got, hexes(ids))
	}
}

// TestUniformNoBias checks the rejection rule on the edge values of m: for
// m = 1 every word is accepted, and a word at or above 2^64 - (2^64 mod m)
// is thrown away.
func TestUniformNoBias(t *testing.T) {
	s := newStream(ID{}, ID{})
	if v := s.uniform(1); v != 0 {
		t.Fatalf("uniform(1) = %d", v)
	}
	// m = 3: 2^64 mod 3 = 1, so only the word 2^64-1 is rejected.
	m := uint64(3)
	if tm := -m % m; tm != 1 {
		t.Fatalf("2^64 mod 3 = %d, want 1", tm)
	}
	counts := make([]int, 6)
	s = newStream(ID{1}, ID{2})
	for i := 0; i < 60000; i++ {
		counts[s.uniform(6)]++
	}
	for v, c := range counts {
		if c < 9000 || c > 11000 {
			t.Errorf("value %d drawn %d times of 60000", v, c)
		}
	}
}

func TestSchedule(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := Schedule{DrawAt: at, EndsAt: at.Add(time.Hour), Window: 10 * time.Minute}
	for _, c := range []struct {
		t    time.Duration
		want int
	}{{-time.Second, -1}, {0, 0}, {10 * time.Minute, 0}, {10*time.Minute + Settle, 1}, {59 * time.Minute, 5}, {2 * time.Hour, 5}} {
		if got := s.RoundAt(at.Add(c.t)); got != c.want {
			t.Errorf("RoundAt(+%v) = %d, want %d", c.t, got, c.want)
		}
	}
	from, until, ok := s.WindowOf(3)
	if !ok || !from.Equal(at.Add(30*time.Minute+3*Settle)) || !until.Equal(at.Add(40*time.Minute+3*Settle)) {
		t.Errorf("WindowOf(3) = %v %v %v", from, until, ok)
	}
	if from, until, ok := s.WindowOf(5); !ok || !from.Equal(at.Add(50*time.Minute+5*Settle)) || !until.Equal(s.EndsAt) {
		t.Errorf("WindowOf(5) = %v %v %v, want cut at the end", from, until, ok)
	}
	if _, _, ok := s.WindowOf(6); ok {
		t.Errorf("round 6 starts after the end")
	}
	whole := Schedule{DrawAt: at, EndsAt: at.Add(time.Hour)}
	if from, until, ok := whole.WindowOf(0); !ok || !from.Equal(at) || !until.Equal(at.Add(time.Hour)) {
		t.Errorf("no claim window: round 0 = %v %v %v, want the whole sale", from, until, ok)
	}
}
