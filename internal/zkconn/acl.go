package zkconn

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/go-zookeeper/zk"
)

// The tree of a seckill deployment under its root (docs/security-zookeeper.md):
//
//	ROOT                   pusher: all; anyone: read
//	ROOT/config            pusher: all; anyone: read
//	ROOT/config/limits     pusher: all; anyone: read (signed versions)
//	ROOT/config/history/*  pusher: all; anyone: read (signed versions)
//	ROOT/backends          pusher: all; backends: create, delete; anyone: read
//	ROOT/backends/*        its backend: all; anyone: read (MAC'd registrations)
//	ROOT/edges             pusher: all; edges: create, delete; anyone: read
//	ROOT/edges/*           its edge: all; anyone: read (status)
const (
	ConfigDir   = "config"
	HistoryDir  = "config/history"
	LimitsNode  = "config/limits"
	BackendsDir = "backends"
	EdgesDir    = "edges"
)

// Credential is one ZooKeeper digest identity, user:password.
type Credential struct {
	User, Password string
}

// ParseCredential reads "user:password".
func ParseCredential(s string) (Credential, error) {
	user, pw, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || user == "" || pw == "" {
		return Credential{}, errors.New("want user:password (both non-empty)")
	}
	if strings.ContainsAny(user, ", \t\n") {
		return Credential{}, fmt.Errorf("user %q: no commas or blanks", user)
	}
	return Credential{User: user, Password: pw}, nil
}

// ParseCredentials reads a comma-separated list of user:password.
func ParseCredentials(s string) ([]Credential, error) {
	var out []Credential
	for i, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		c, err := ParseCredential(part)
		if err != nil {
			return nil, fmt.Errorf("credential %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// String names the user, never the password.
func (c Credential) String() string { return "digest:" + c.User }

// ACL gives this identity perms. Only its digest (SHA-1 of user:password)
// goes into ZooKeeper.
func (c Credential) ACL(perms int32) zk.ACL { return zk.DigestACL(perms, c.User, c.Password)[0] }

// OwnNode is the ACL of a node a role creates for itself (a registration,
// an edge's status): with a credential, all rights to its creator and
// read to anyone; without one (an open tree), all rights to anyone.
func OwnNode(authenticated bool) []zk.ACL {
	if !authenticated {
		return zk.WorldACL(zk.PermAll)
	}
	return []zk.ACL{zk.AuthACL(zk.PermAll)[0], zk.WorldACL(zk.PermRead)[0]}
}

// Roles are the identities of a deployment.
type Roles struct {
	Pusher   Credential
	Backends []Credential
	Edges    []Credential
}

// Folder is a folder of the tree and its ACL.
type Folder struct {
	Path string
	ACL  []zk.ACL
}

// Folders returns the folders under root with the ACL each must have,
// parents first.
func (r Roles) Folders(root string) []Folder {
	root = path.Clean("/" + root)
	pusherOnly := r.PusherACL()
	with := func(creds []Credential, perms int32) []zk.ACL {
		acl := append([]zk.ACL{}, pusherOnly...)
		for _, c := range creds {
			acl = append(acl, c.ACL(perms))
		}
		return acl
	}
	return []Folder{
		{root, pusherOnly},
		{path.Join(root, ConfigDir), pusherOnly},
		{path.Join(root, HistoryDir), pusherOnly},
		{path.Join(root, BackendsDir), with(r.Backends, zk.PermCreate|zk.PermDelete)},
		{path.Join(root, EdgesDir), with(r.Edges, zk.PermCreate|zk.PermDelete)},
	}
}

// PusherACL is the ACL of the pusher's nodes: all rights to the pusher,
// read to anyone.
func (r Roles) PusherACL() []zk.ACL {
	return []zk.ACL{r.Pusher.ACL(zk.PermAll), zk.WorldACL(zk.PermRead)[0]}
}

// WorldWritable reports whether acl lets anyone do more than read.
func WorldWritable(acl []zk.ACL) bool {
	for _, a := range acl {
		if a.Scheme == "world" && a.ID == "anyone" {
			if a.Perms&^zk.PermRead != 0 {
				return true
			}
		}
	}
	return false
}
