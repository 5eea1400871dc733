-- The SQLite translation of postgres/migrations/0005_draws.sql: the same
-- tables, columns and refusals (triggers with RAISE(ABORT)).
CREATE TABLE draws (
	item_id          INTEGER PRIMARY KEY REFERENCES items (id),
	seed             BLOB    NOT NULL CHECK (length(seed) = 32),
	entry_key        BLOB    NOT NULL CHECK (length(entry_key) = 32),
	commitment       BLOB    NOT NULL CHECK (length(commitment) = 32),
	entries_open_at  INTEGER NOT NULL,
	entries_close_at INTEGER NOT NULL,
	entries_hash     BLOB    CHECK (length(entries_hash) = 32),
	entry_count      INTEGER NOT NULL DEFAULT 0,
	closed_at        INTEGER,
	created_at       INTEGER NOT NULL,
	CHECK (entries_close_at > entries_open_at)
) STRICT;

CREATE TABLE draw_entries (
	item_id    INTEGER NOT NULL REFERENCES draws (item_id),
	entry_id   BLOB    NOT NULL CHECK (length(entry_id) = 32),
	user_id    INTEGER NOT NULL REFERENCES users (id),
	entered_at INTEGER NOT NULL,
	PRIMARY KEY (item_id, entry_id),
	UNIQUE (item_id, user_id)
) STRICT;

CREATE TABLE draw_rounds (
	item_id     INTEGER NOT NULL REFERENCES draws (item_id),
	round       INTEGER NOT NULL CHECK (round >= 0),
	first_place INTEGER NOT NULL CHECK (first_place >= 0),
	count       INTEGER NOT NULL CHECK (count >= 0),
	fixed_at    INTEGER NOT NULL,
	PRIMARY KEY (item_id, round)
) STRICT;

CREATE TRIGGER draws_frozen BEFORE UPDATE ON draws
WHEN NEW.seed IS NOT OLD.seed OR NEW.entry_key IS NOT OLD.entry_key OR NEW.commitment IS NOT OLD.commitment
  OR NEW.item_id IS NOT OLD.item_id OR NEW.entries_open_at IS NOT OLD.entries_open_at
  OR NEW.entries_close_at IS NOT OLD.entries_close_at
  OR (OLD.entries_hash IS NOT NULL AND (NEW.entries_hash IS NOT OLD.entries_hash OR NEW.entry_count IS NOT OLD.entry_count))
BEGIN
	SELECT RAISE(ABORT, 'a draw''s seed, commitment and closed entry list never change');
END;

CREATE TRIGGER draw_entries_closed BEFORE INSERT ON draw_entries
WHEN EXISTS (SELECT 1 FROM draws WHERE item_id = NEW.item_id AND entries_hash IS NOT NULL)
BEGIN
	SELECT RAISE(ABORT, 'the entries of this draw are closed');
END;

CREATE TRIGGER draw_entries_no_update BEFORE UPDATE ON draw_entries
BEGIN
	SELECT RAISE(ABORT, 'draw entries are never changed or removed');
END;

CREATE TRIGGER draw_entries_no_delete BEFORE DELETE ON draw_entries
BEGIN
	SELECT RAISE(ABORT, 'draw entries are never changed or removed');
END;

CREATE TRIGGER draw_rounds_no_update BEFORE UPDATE ON draw_rounds
BEGIN
	SELECT RAISE(ABORT, 'a fixed round of a draw never changes');
END;

CREATE TRIGGER draw_rounds_no_delete BEFORE DELETE ON draw_rounds
BEGIN
	SELECT RAISE(ABORT, 'a fixed round of a draw never changes');
END;
