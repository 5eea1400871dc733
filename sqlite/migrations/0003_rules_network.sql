-- The SQLite translation of postgres/migrations/0003_rules_network.sql.
ALTER TABLE items ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN network TEXT NOT NULL DEFAULT '';
