// Package username decides when two usernames are the same account: after
// Unicode NFKC, case folding and the Unicode confusable skeleton (UTS #39),
// so "Alice", "ALICE", "aIice" (a capital I) and "ａｌｉｃｅ" (full width) cannot
// sit beside "alice". Stores keep Key(name) in a unique column and look
// accounts up by it; the name itself is kept as the user typed it, after
// Normalize.
package username

import (
	"strings"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Normalize returns the form of a username that is stored and shown: NFKC
// (full-width and compatibility characters become their plain forms) with
// the spaces around it trimmed. Callers validate the result.
func Normalize(name string) string {
	return strings.TrimSpace(norm.NFKC.String(name))
}

// Key is the identity of a username: two names with the same key are the
// same account. It is the confusable skeleton of the case-folded name,
// folded again (a skeleton may map to capitals), with 'i' put into the
// class of 'l': a capital I is confusable with l and folds to i, so i, I,
// l and 1 are one letter here.
func Key(name string) string {
	k := Normalize(name)
	fold := cases.Fold()
	for range 2 {
		k = fold.String(confusables.Skeleton(k))
	}
	return strings.ReplaceAll(k, "i", "l")
}
