package username

import "testing"

func TestKey(t *testing.T) {
	t.Parallel()
	same := [][]string{
		{"alice", "Alice", "ALICE", "aIice", "AIice", "al1ce", "ａｌｉｃｅ", " alice "},
		{"bob_99", "BOB_99", "B0B_99"},
		{"modern", "modem", "MODERN"},
		{"paypal", "PAYPAL", "paypaI", "pаypal"}, // the second a of the last is Cyrillic
	}
	for _, group := range same {
		want := Key(group[0])
		for _, n := range group[1:] {
			if got := Key(n); got != want {
				t.Errorf("Key(%q) = %q, Key(%q) = %q: want the same", n, got, group[0], want)
			}
		}
	}
	differ := [][2]string{{"alice", "alex"}, {"bob", "rob"}, {"carol", "carl"}, {"ann", "anna"}, {"user1", "user2"}}
	for _, p := range differ {
		if Key(p[0]) == Key(p[1]) {
			t.Errorf("Key(%q) == Key(%q) = %q: want different", p[0], p[1], Key(p[0]))
		}
	}
	if got := Normalize("ａｌｉｃｅ "); got != "alice" {
		t.Errorf("Normalize: %q", got)
	}
}
