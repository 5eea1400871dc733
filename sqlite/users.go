package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"seckill"
)

// User is an account (the same type in every store).
type User = seckill.User

// CreateUser stores a new user and returns its id. The caller validates the
// name; a name already taken gives an error with code seckill.EUsernameTaken.
func (db *DB) CreateUser(ctx context.Context, username, passwordHash string) (int64, error) {
	if err := checkText(username, passwordHash); err != nil {
		return 0, fmt.Errorf("creating user: %w", err)
	}
	var id int64
	err := db.w.QueryRowContext(ctx,
		"INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?) RETURNING id",
		username, passwordHash, micros(time.Now())).Scan(&id)
	if isUnique(err) {
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
	var (
		u       User
		created int64
	)
	err := db.r.QueryRowContext(ctx,
		"SELECT id, username, password_hash, created_at FROM users WHERE username = ?",
		username).Scan(&u.ID, &u.Username, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, seckill.Errorf(seckill.ENotFound, "no user %q", username)
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user: %w", unavailable(err))
	}
	u.CreatedAt = fromMicros(created)
	return u, nil
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

// EnsureUsers returns the id of every name in usernames, creating the
// missing ones without a password. Load tests use it to make thousands of
// accounts, so the work is two statements in one transaction whatever the
// count: the sorted, distinct names travel as one JSON array parameter,
// expanded by json_each, into an INSERT ... ON CONFLICT DO NOTHING and then
// into the SELECT of the ids. The transaction holds the write lock, so no
// other writer can interleave between the two.
func (db *DB) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	if len(usernames) == 0 {
		return map[string]int64{}, nil
	}
	// Valid UTF-8 without NUL survives the JSON round trip exactly.
	if err := checkText(usernames...); err != nil {
		return nil, fmt.Errorf("creating users: %w", err)
	}
	names := slices.Clone(usernames)
	slices.Sort(names)
	names = slices.Compact(names)
	list, err := json.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("creating users: %w", err)
	}
	ids := make(map[string]int64, len(names))
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		// WHERE true keeps the parser from reading ON CONFLICT as a
		// join constraint.
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO users (username, created_at)
			SELECT value, ? FROM json_each(?) WHERE true
			ON CONFLICT (username) DO NOTHING`, micros(time.Now()), string(list)); err != nil {
			return fmt.Errorf("creating users: %w", unavailable(err))
		}
		rows, err := tx.QueryContext(ctx, `
			SELECT u.username, u.id FROM json_each(?) AS j JOIN users AS u ON u.username = j.value`, string(list))
		if err != nil {
			return fmt.Errorf("reading user ids: %w", unavailable(err))
		}
		defer rows.Close()
		for rows.Next() {
			var (
				name string
				id   int64
			)
			if err := rows.Scan(&name, &id); err != nil {
				return fmt.Errorf("reading user ids: %w", unavailable(err))
			}
			ids[name] = id
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading user ids: %w", unavailable(err))
		}
		if len(ids) != len(names) {
			return fmt.Errorf("ensuring users: %d of %d names found after the insert", len(ids), len(names))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}
