-- The SQLite translation of postgres/migrations/0001_init.sql: the same
-- tables, columns, constraint names and indexes. Differences:
--   * every time column holds microseconds since the Unix epoch (UTC) as an
--     INTEGER, the precision PostgreSQL keeps for timestamptz; the package
--     converts to and from time.Time;
--   * bigserial is INTEGER PRIMARY KEY AUTOINCREMENT (never reuses an id);
--   * the tables are STRICT, so a value of the wrong type is refused as
--     PostgreSQL would refuse it instead of being stored as it is.
-- The DEFAULTs of the time columns are a fallback: the package always
-- supplies the time itself, with microseconds.

CREATE TABLE users (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	username      TEXT    NOT NULL UNIQUE,
	password_hash TEXT    NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;

CREATE TABLE items (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	name        TEXT    NOT NULL,
	price_cents INTEGER NOT NULL CONSTRAINT items_price_cents_check CHECK (price_cents >= 0),
	stock       INTEGER NOT NULL CONSTRAINT items_stock_check CHECK (stock >= 0),
	starts_at   INTEGER NOT NULL,
	ends_at     INTEGER NOT NULL,
	challenge   TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
	CONSTRAINT items_window_check CHECK (ends_at > starts_at)
) STRICT;

CREATE TABLE orders (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	order_ref   TEXT    NOT NULL UNIQUE,
	user_id     INTEGER NOT NULL CONSTRAINT orders_user_id_fkey REFERENCES users (id),
	item_id     INTEGER NOT NULL CONSTRAINT orders_item_id_fkey REFERENCES items (id),
	reserved_at INTEGER NOT NULL,
	created_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
	CONSTRAINT orders_user_item_key UNIQUE (user_id, item_id)
) STRICT;

CREATE INDEX orders_item_id_idx ON orders (item_id);

-- No foreign keys: the reason an order failed may well be a missing user or
-- item.
CREATE TABLE failed_orders (
	order_ref TEXT    PRIMARY KEY NOT NULL,
	user_id   INTEGER NOT NULL,
	item_id   INTEGER NOT NULL,
	reason    TEXT    NOT NULL,
	failed_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;

CREATE INDEX failed_orders_user_item_idx ON failed_orders (user_id, item_id, failed_at DESC);
CREATE INDEX failed_orders_item_id_idx ON failed_orders (item_id);
