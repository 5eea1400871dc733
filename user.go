package seckill

import "time"

// User is an account, as every store (postgres, sqlite) keeps it. An empty
// PasswordHash means the account cannot log in with a password.
type User struct {
	ID           int64
	Username     string
	PasswordHash string
	CreatedAt    time.Time
}
