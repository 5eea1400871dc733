-- The SQLite translation of postgres/migrations/0002_username_key.sql: the
-- identity of a username (package username), filled at every start by
-- fillUsernameKeys, oldest account first; NULL for an account whose key an
-- older one holds (reported).
ALTER TABLE users ADD COLUMN username_key TEXT;
CREATE UNIQUE INDEX users_by_username_key ON users (username_key);
