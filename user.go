package seckill

import "time"

// User is an account, as every store (postgres, sqlite) keeps it. An empty
// PasswordHash means the account cannot log in with a password.
type User struct {
	ID           int64
	Username     string
	PasswordHash string
	CreatedAt    time.Time
	// Network is the /24 (IPv4) or /48 (IPv6) the account registered
	// from, as the edge saw it ("203.0.113.0/24"); "" for accounts made
	// in bulk (EnsureUsers) or before networks were recorded.
	Network string
}
