package zkconn

import (
	"slices"
	"strings"
	"testing"

	"github.com/go-zookeeper/zk"
)

func TestParseCredential(t *testing.T) {
	c, err := ParseCredential(" edge:pa:ss ")
	if err != nil || c.User != "edge" || c.Password != "pa:ss" {
		t.Fatalf("ParseCredential = %+v, %v", c, err)
	}
	if c.String() != "digest:edge" || strings.Contains(c.String(), "pa") {
		t.Fatalf("String %q shows more than the user", c.String())
	}
	for _, bad := range []string{"", "edge", "edge:", ":pw", "a b:pw"} {
		if _, err := ParseCredential(bad); err == nil {
			t.Errorf("ParseCredential(%q): no error", bad)
		}
	}
	cs, err := ParseCredentials("a:1, b:2,")
	if err != nil || len(cs) != 2 || cs[1].User != "b" {
		t.Fatalf("ParseCredentials = %+v, %v", cs, err)
	}
	if _, err := ParseCredentials("a:1,b"); err == nil || !strings.Contains(err.Error(), "credential 2") {
		t.Fatalf("ParseCredentials with a bad second: %v", err)
	}
}

func TestFolders(t *testing.T) {
	r := Roles{
		Pusher:   Credential{"pusher", "p"},
		Backends: []Credential{{"b1", "x"}, {"b2", "y"}},
		Edges:    []Credential{{"edge", "z"}},
	}
	var paths []string
	for _, f := range r.Folders("/sk/") {
		paths = append(paths, f.Path)
		if WorldWritable(f.ACL) {
			t.Errorf("%s world-writable: %v", f.Path, f.ACL)
		}
		if f.ACL[0] != r.Pusher.ACL(zk.PermAll) {
			t.Errorf("%s: the pusher has not all rights: %v", f.Path, f.ACL)
		}
		switch f.Path {
		case "/sk/backends":
			if len(f.ACL) != 4 || f.ACL[2].Perms != zk.PermCreate|zk.PermDelete || !strings.HasPrefix(f.ACL[3].ID, "b2:") {
				t.Errorf("backends ACL %v", f.ACL)
			}
		case "/sk/edges":
			if len(f.ACL) != 3 || !strings.HasPrefix(f.ACL[2].ID, "edge:") || f.ACL[2].Perms != zk.PermCreate|zk.PermDelete {
				t.Errorf("edges ACL %v", f.ACL)
			}
		default:
			if len(f.ACL) != 2 || f.ACL[1] != zk.WorldACL(zk.PermRead)[0] {
				t.Errorf("%s ACL %v", f.Path, f.ACL)
			}
		}
	}
	want := []string{"/sk", "/sk/config", "/sk/config/history", "/sk/backends", "/sk/edges"}
	if !slices.Equal(paths, want) {
		t.Fatalf("folders %v, want %v", paths, want)
	}
	if !WorldWritable(zk.WorldACL(zk.PermAll)) || !WorldWritable(OwnNode(false)) || WorldWritable(OwnNode(true)) {
		t.Fatal("WorldWritable / OwnNode")
	}
}
