package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"seckill"
	"seckill/username"
)

// User is an account (the same type in every store).
type User = seckill.User

// CreateUser stores a new user and returns its id. The caller validates the
// name; a name already taken gives an error with code seckill.EUsernameTaken.
//
// A name with the key of an existing one (username.Key) is taken too.
//
// network is the registration network kept on the account (User.Network).
func (db *DB) CreateUser(ctx context.Context, name, passwordHash, network string) (int64, error) {
	if err := checkText(name, passwordHash, network); err != nil {
		return 0, fmt.Errorf("creating user: %w", err)
	}
	var id int64
	err := db.w.QueryRowContext(ctx,
		"INSERT INTO users (username, username_key, password_hash, created_at, network) VALUES (?, ?, ?, ?, ?) RETURNING id",
		name, username.Key(name), passwordHash, micros(time.Now()), network).Scan(&id)
	if isUnique(err) {
		return 0, seckill.Errorf(seckill.EUsernameTaken, "username %q is taken", name)
	}
	if err != nil {
		return 0, fmt.Errorf("creating user: %w", unavailable(err))
	}
	return id, nil
}

// UserByName returns the user whose name has the key of name (username.Key:
// "ALICE" finds alice), or an error with code seckill.ENotFound.
func (db *DB) UserByName(ctx context.Context, name string) (User, error) {
	var (
		u       User
		created int64
	)
	err := db.r.QueryRowContext(ctx,
		"SELECT id, username, password_hash, created_at, network FROM users WHERE username_key = ?",
		username.Key(name)).Scan(&u.ID, &u.Username, &u.PasswordHash, &created, &u.Network)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, seckill.Errorf(seckill.ENotFound, "no user %q", name)
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
	// [name, key] pairs, one per key (the first name in sorted order), by
	// key; names are matched by key (username.Key).
	sorted := slices.Clone(usernames)
	slices.Sort(sorted)
	first := map[string]string{}
	var keys []string
	for _, n := range sorted {
		k := username.Key(n)
		if _, ok := first[k]; !ok {
			first[k] = n
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	pairs := make([][2]string, len(keys))
	for i, k := range keys {
		pairs[i] = [2]string{first[k], k}
	}
	list, err := json.Marshal(pairs)
	if err != nil {
		return nil, fmt.Errorf("creating users: %w", err)
	}
	byKey := make(map[string]int64, len(keys))
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		// WHERE true keeps the parser from reading ON CONFLICT as a
		// join constraint.
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO users (username, username_key, created_at)
			SELECT value ->> 0, value ->> 1, ? FROM json_each(?) WHERE true
			ON CONFLICT DO NOTHING`, micros(time.Now()), string(list)); err != nil {
			return fmt.Errorf("creating users: %w", unavailable(err))
		}
		rows, err := tx.QueryContext(ctx, `
			SELECT u.username_key, u.id FROM json_each(?) AS j JOIN users AS u ON u.username_key = j.value ->> 1`, string(list))
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
			byKey[name] = id
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading user ids: %w", unavailable(err))
		}
		if len(byKey) != len(keys) {
			return fmt.Errorf("ensuring users: %d of %d names found after the insert", len(byKey), len(keys))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make(map[string]int64, len(usernames))
	for _, n := range usernames {
		ids[n] = byKey[username.Key(n)]
	}
	return ids, nil
}

// UsernameCollision is an account whose name has the key of an older
// account's: the older one owns the name; this one keeps its id, orders and
// sessions but cannot log in by name.
type UsernameCollision struct {
	ID       int64
	Username string
	OwnerID  int64
	Owner    string
}

// UsernameCollisions returns the collisions the last fill of username keys
// (at Open) found.
func (db *DB) UsernameCollisions() []UsernameCollision { return slices.Clone(db.collisions) }

// fillUsernameKeys gives every account without a username key its key,
// oldest account first, in one write transaction, and reports (logs, and
// keeps for UsernameCollisions) each account whose key an older one holds.
func (db *DB) fillUsernameKeys(ctx context.Context) error {
	var coll []UsernameCollision
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		coll = nil
		type acct struct {
			id   int64
			name string
		}
		rows, err := tx.QueryContext(ctx, "SELECT id, username FROM users WHERE username_key IS NULL ORDER BY created_at, id")
		if err != nil {
			return err
		}
		var todo []acct
		for rows.Next() {
			var a acct
			if err := rows.Scan(&a.id, &a.name); err != nil {
				rows.Close()
				return err
			}
			todo = append(todo, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, a := range todo {
			k := username.Key(a.name)
			var o acct
			err := tx.QueryRowContext(ctx, "SELECT id, username FROM users WHERE username_key = ?", k).Scan(&o.id, &o.name)
			if err == nil {
				coll = append(coll, UsernameCollision{ID: a.id, Username: a.name, OwnerID: o.id, Owner: o.name})
				continue
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE users SET username_key = ? WHERE id = ?", k, a.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("filling username keys: %w", unavailable(err))
	}
	db.collisions = coll
	for _, c := range coll {
		slog.Default().Warn("username collision: the older account keeps the name; this one cannot log in by name",
			"user_id", c.ID, "username", c.Username, "owner_id", c.OwnerID, "owner", c.Owner)
	}
	return nil
}

// Accounts returns the creation time and registration network of the users
// ids (those that exist), for sessions made by the admin API to carry them.
func (db *DB) Accounts(ctx context.Context, ids []int64) (map[int64]seckill.Account, error) {
	out := make(map[int64]seckill.Account, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("reading accounts: %w", err)
	}
	rows, err := db.r.QueryContext(ctx,
		"SELECT u.id, u.created_at, u.network FROM json_each(?) AS j JOIN users AS u ON u.id = j.value", string(list))
	if err != nil {
		return nil, fmt.Errorf("reading accounts: %w", unavailable(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			a       seckill.Account
			created int64
		)
		if err := rows.Scan(&a.ID, &created, &a.Network); err != nil {
			return nil, fmt.Errorf("reading accounts: %w", unavailable(err))
		}
		a.CreatedAt = fromMicros(created)
		out[a.ID] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading accounts: %w", unavailable(err))
	}
	return out, nil
}
