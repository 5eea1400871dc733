-- Users log in by name; an empty password_hash disables password login
-- (accounts made in bulk by EnsureUsers for load tests have none).
CREATE TABLE users (
	id            bigserial   PRIMARY KEY,
	username      text        NOT NULL UNIQUE,
	password_hash text        NOT NULL DEFAULT '',
	created_at    timestamptz NOT NULL DEFAULT now()
);

-- Stock is the total number of units ever offered; what is left lives in
-- Redis. The checks keep a bad admin request from creating nonsense.
CREATE TABLE items (
	id          bigserial   PRIMARY KEY,
	name        text        NOT NULL,
	price_cents bigint      NOT NULL CONSTRAINT items_price_cents_check CHECK (price_cents >= 0),
	stock       bigint      NOT NULL CONSTRAINT items_stock_check CHECK (stock >= 0),
	starts_at   timestamptz NOT NULL,
	ends_at     timestamptz NOT NULL,
	challenge   text        NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT items_window_check CHECK (ends_at > starts_at)
);

-- One order per user and item, and one row per order_ref: the two unique
-- constraints make redelivered and duplicated messages harmless
-- (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE orders (
	id          bigserial   PRIMARY KEY,
	order_ref   text        NOT NULL UNIQUE,
	user_id     bigint      NOT NULL REFERENCES users (id),
	item_id     bigint      NOT NULL REFERENCES items (id),
	reserved_at timestamptz NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT orders_user_item_key UNIQUE (user_id, item_id)
);

-- CountOrders and OrderRefs look orders up by item alone.
CREATE INDEX orders_item_id_idx ON orders (item_id);

-- Orders that could not be stored (dead-lettered). No foreign keys: the
-- reason an order failed may well be a missing user or item.
CREATE TABLE failed_orders (
	order_ref text        PRIMARY KEY,
	user_id   bigint      NOT NULL,
	item_id   bigint      NOT NULL,
	reason    text        NOT NULL,
	failed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX failed_orders_user_item_idx ON failed_orders (user_id, item_id, failed_at DESC);
CREATE INDEX failed_orders_item_id_idx ON failed_orders (item_id);
