package backend

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"seckill"
)

// Users is the account store (package postgres).
type Users interface {
	CreateUser(ctx context.Context, username, passwordHash string) (int64, error)
	Credentials(ctx context.Context, username string) (int64, string, error)
	EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error)
}

// Register creates a user with a password.
func (s *Service) Register(ctx context.Context, username, password string) (int64, error) {
	if err := seckill.ValidateUsername(username); err != nil {
		return 0, err
	}
	if err := seckill.ValidatePassword(password); err != nil {
		return 0, err
	}
	if s.users == nil {
		return 0, errors.New("registering: no user store")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return 0, err
	}
	return s.users.CreateUser(ctx, username, string(hash))
}

var (
	dummyOnce sync.Once
	dummyHash []byte
)

// Login checks a username and password and returns the user id. A wrong
// name and a wrong password take the same time and give the same error.
func (s *Service) Login(ctx context.Context, username, password string) (int64, error) {
	bad := seckill.Errorf(seckill.EBadCredentials, "wrong username or password")
	if s.users == nil {
		return 0, errors.New("logging in: no user store")
	}
	if len(password) > seckill.MaxPassword || seckill.ValidateUsername(username) != nil {
		return 0, bad
	}
	id, hash, err := s.users.Credentials(ctx, username)
	if err != nil && seckill.ErrorCode(err) != seckill.ENotFound {
		return 0, err
	}
	if err != nil || hash == "" {
		dummyOnce.Do(func() { dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost) })
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return 0, bad
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return 0, bad
	}
	return id, nil
}

// EnsureUsers returns the ids of the named users, creating the missing ones
// without a password (they can only get sessions from the admin API: load
// tests use it).
func (s *Service) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	if len(usernames) == 0 || len(usernames) > seckill.MaxEnsureUsers {
		return nil, seckill.Errorf(seckill.EInvalid, "usernames must hold 1 to %d names", seckill.MaxEnsureUsers)
	}
	for _, n := range usernames {
		if err := seckill.ValidateUsername(n); err != nil {
			return nil, seckill.Errorf(seckill.EInvalid, "username %q: must be 3 to 32 characters of A-Z, a-z, 0-9, '_', '.', '-'", n)
		}
	}
	if s.users == nil {
		return nil, errors.New("ensuring users: no user store")
	}
	return s.users.EnsureUsers(ctx, usernames)
}
