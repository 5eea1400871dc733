package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"seckill"
	"seckill/username"
)

// User is an account (the same type in every store).
type User = seckill.User

// CreateUser stores a new user and returns its id. The caller validates the
// name; a name already taken, or one with the same key (username.Key:
// "Alice" when "alice" exists), gives an error with code
// seckill.EUsernameTaken.
//
// network is the registration network kept on the account (User.Network).
func (db *DB) CreateUser(ctx context.Context, name, passwordHash, network string) (int64, error) {
	var id int64
	err := db.pool.QueryRow(ctx,
		"INSERT INTO users (username, username_key, password_hash, network) VALUES ($1, $2, $3, $4) RETURNING id",
		name, username.Key(name), passwordHash, network).Scan(&id)
	if isCode(err, uniqueViolation) {
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
	var u User
	err := db.pool.QueryRow(ctx,
		"SELECT id, username, password_hash, created_at, network FROM users WHERE username_key = $1",
		username.Key(name)).Scan(&u.ID, &u.Username, &u.PasswordHash, &u.CreatedAt, &u.Network)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, seckill.Errorf(seckill.ENotFound, "no user %q", name)
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
//
// Names are matched by key (username.Key): a name with the key of an
// existing account gets that account's id; of several names with one key
// only the first in sorted order is created.
func (db *DB) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	if len(usernames) == 0 {
		return map[string]int64{}, nil
	}
	names, keys := distinctKeys(usernames)
	if _, err := db.pool.Exec(ctx, `
		INSERT INTO users (username, username_key)
		SELECT name, key FROM unnest($1::text[], $2::text[]) AS t (name, key) ORDER BY key
		ON CONFLICT DO NOTHING`, names, keys); err != nil {
		return nil, fmt.Errorf("creating users: %w", unavailable(err))
	}
	rows, err := db.pool.Query(ctx,
		"SELECT username_key, id FROM users WHERE username_key = ANY($1::text[])", keys)
	if err != nil {
		return nil, fmt.Errorf("reading user ids: %w", unavailable(err))
	}
	byKey := make(map[string]int64, len(keys))
	var (
		key string
		id  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&key, &id}, func() error {
		byKey[key] = id
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading user ids: %w", unavailable(err))
	}
	ids := make(map[string]int64, len(usernames))
	for _, n := range usernames {
		id, ok := byKey[username.Key(n)]
		if !ok {
			// Only a concurrent delete can get here; there is none today.
			return nil, fmt.Errorf("ensuring users: user %q vanished", n)
		}
		ids[n] = id
	}
	return ids, nil
}

// distinctKeys returns the names of usernames with distinct keys (the
// first in sorted order for each key) and their keys, sorted by key.
func distinctKeys(usernames []string) (names, keys []string) {
	sorted := slices.Clone(usernames)
	slices.Sort(sorted)
	first := map[string]string{}
	for _, n := range sorted {
		k := username.Key(n)
		if _, ok := first[k]; !ok {
			first[k] = n
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		names = append(names, first[k])
	}
	return names, keys
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
// oldest account first, and reports (logs, and keeps for
// UsernameCollisions) each account whose key an older one already holds.
// Accounts made before the key existed get theirs at the first start after
// the migration; the collided ones stay without and are reported again at
// every start.
func (db *DB) fillUsernameKeys(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		cs, err := db.fillUsernameKeysOnce(ctx)
		if isCode(err, uniqueViolation) && attempt < 5 {
			continue // a key taken meanwhile (a registration, another process): again
		}
		if err != nil {
			return fmt.Errorf("filling username keys: %w", unavailable(err))
		}
		db.collisions = cs
		for _, c := range cs {
			slog.Default().Warn("username collision: the older account keeps the name; this one cannot log in by name",
				"user_id", c.ID, "username", c.Username, "owner_id", c.OwnerID, "owner", c.Owner)
		}
		return nil
	}
}

func (db *DB) fillUsernameKeysOnce(ctx context.Context) ([]UsernameCollision, error) {
	rows, err := db.pool.Query(ctx,
		"SELECT id, username FROM users WHERE username_key IS NULL ORDER BY created_at, id")
	if err != nil {
		return nil, err
	}
	type acct struct {
		id   int64
		name string
	}
	var todo []acct
	var a acct
	if _, err := pgx.ForEachRow(rows, []any{&a.id, &a.name}, func() error {
		todo = append(todo, a)
		return nil
	}); err != nil {
		return nil, err
	}
	if len(todo) == 0 {
		return nil, nil
	}
	keys := make([]string, len(todo))
	for i, a := range todo {
		keys[i] = username.Key(a.name)
	}
	// Who holds these keys already.
	owners := map[string]acct{}
	rows, err = db.pool.Query(ctx, "SELECT username_key, id, username FROM users WHERE username_key = ANY($1::text[])", keys)
	if err != nil {
		return nil, err
	}
	var k string
	if _, err := pgx.ForEachRow(rows, []any{&k, &a.id, &a.name}, func() error {
		owners[k] = a
		return nil
	}); err != nil {
		return nil, err
	}
	var (
		ids  []int64
		set  []string
		coll []UsernameCollision
	)
	for i, a := range todo {
		if o, ok := owners[keys[i]]; ok {
			coll = append(coll, UsernameCollision{ID: a.id, Username: a.name, OwnerID: o.id, Owner: o.name})
			continue
		}
		owners[keys[i]] = a
		ids, set = append(ids, a.id), append(set, keys[i])
	}
	if len(ids) > 0 {
		if _, err := db.pool.Exec(ctx, `
			UPDATE users SET username_key = t.key
			FROM unnest($1::bigint[], $2::text[]) AS t (id, key)
			WHERE users.id = t.id AND users.username_key IS NULL`, ids, set); err != nil {
			return nil, err
		}
	}
	return coll, nil
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

// Accounts returns the creation time and registration network of the users
// ids (those that exist), for sessions made by the admin API to carry them.
func (db *DB) Accounts(ctx context.Context, ids []int64) (map[int64]seckill.Account, error) {
	out := make(map[int64]seckill.Account, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.pool.Query(ctx, "SELECT id, created_at, network FROM users WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, fmt.Errorf("reading accounts: %w", unavailable(err))
	}
	var a seckill.Account
	if _, err := pgx.ForEachRow(rows, []any{&a.ID, &a.CreatedAt, &a.Network}, func() error {
		out[a.ID] = a
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading accounts: %w", unavailable(err))
	}
	return out, nil
}
