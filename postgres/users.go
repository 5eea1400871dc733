package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"seckill"
)

// User is an account (the same type in every store).
type User = seckill.User

// CreateUser stores a new user and returns its id. The caller validates the
// name; a name already taken gives an error with code seckill.EUsernameTaken.
func (db *DB) CreateUser(ctx context.Context, username, passwordHash string) (int64, error) {
	var id int64
	err := db.pool.QueryRow(ctx,
		"INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id",
		username, passwordHash).Scan(&id)
	if isCode(err, uniqueViolation) {
		return 0, seckill.Errorf(seckill.EUsernameTaken, "username %q is taken", username)
	}
	if err != nil {
		return 0, fmt.Errorf("creating user: %w", unavailable(err))
	}
	return id, nil
}

// UserByName returns the user called username, or an error with code
// seckill.ENotFound.
func (db *DB) UserByName(ctx context.Context, username string) (User, error) {
	var u User
	err := db.pool.QueryRow(ctx,
		"SELECT id, username, password_hash, created_at FROM users WHERE username = $1",
		username).Scan(&u.ID, &u.Username, &u.PasswordHash, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, seckill.Errorf(seckill.ENotFound, "no user %q", username)
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user: %w", unavailable(err))
	}
	return u, nil
}

// EnsureUsers returns the id of every name in usernames, creating the
// missing ones without a password. Load tests use it to make thousands of
// accounts, so the creation is a single statement whatever the count; the
// names are inserted in sorted order so that two concurrent calls with
// overlapping names lock them in the same order and cannot deadlock.
//
// The ids are read by a second statement rather than RETURNING: ON CONFLICT
// DO NOTHING returns nothing for names that exist, and a name committed by
// a concurrent call after the insert's snapshot would be missed by a CTE.
func (db *DB) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	if len(usernames) == 0 {
		return map[string]int64{}, nil
	}
	if _, err := db.pool.Exec(ctx, `
		INSERT INTO users (username)
		SELECT DISTINCT name FROM unnest($1::text[]) AS name ORDER BY name
		ON CONFLICT (username) DO NOTHING`, usernames); err != nil {
		return nil, fmt.Errorf("creating users: %w", unavailable(err))
	}
	rows, err := db.pool.Query(ctx,
		"SELECT username, id FROM users WHERE username = ANY($1::text[])", usernames)
	if err != nil {
		return nil, fmt.Errorf("reading user ids: %w", unavailable(err))
	}
	ids := make(map[string]int64, len(usernames))
	var (
		name string
		id   int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &id}, func() error {
		ids[name] = id
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading user ids: %w", unavailable(err))
	}
	for _, n := range usernames {
		if _, ok := ids[n]; !ok {
			// Only a concurrent delete can get here; there is none today.
			return nil, fmt.Errorf("ensuring users: user %q vanished", n)
		}
	}
	return ids, nil
}

// HashPassword returns the bcrypt hash of pw. bcrypt looks at 72 bytes at
// most and refuses longer passwords rather than silently truncating them;
// that refusal comes back with code seckill.EInvalid.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return "", seckill.Errorf(seckill.EInvalid, "password is longer than 72 bytes")
	}
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches hash. An empty hash never
// matches: it marks an account without password login.
func CheckPassword(hash, pw string) bool {
	if hash == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

// Credentials returns the id and password hash of a user, or an error with
// code seckill.ENotFound.
func (db *DB) Credentials(ctx context.Context, username string) (int64, string, error) {
	u, err := db.UserByName(ctx, username)
	if err != nil {
		return 0, "", err
	}
	return u.ID, u.PasswordHash, nil
}
