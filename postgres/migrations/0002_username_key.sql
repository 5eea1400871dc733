-- The identity of a username (package username: NFKC, case folding, the
-- confusable skeleton): "Alice" and "aIice" have the key of "alice" and
-- cannot sit beside it. Filled at every start by fillUsernameKeys, oldest
-- account first; an account whose key an older one holds keeps NULL (it
-- keeps its orders, loses login by name) and is reported.
ALTER TABLE users ADD COLUMN username_key text;
CREATE UNIQUE INDEX users_by_username_key ON users (username_key);
