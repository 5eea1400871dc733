-- The draw of an item (allocation draw, issue 17; docs/DRAW.md). The row of
-- draws is written with the item, in the same transaction: the commitment
-- exists from the item's creation. The seed and the entry key are secrets
-- (the seed until draw_at, the key for ever). entries_hash is set once,
-- when entries close; triggers refuse every later change of the seed, the
-- commitment, the hash, and every entry added after it or changed at all.
CREATE TABLE draws (
    item_id          bigint      PRIMARY KEY REFERENCES items (id),
    seed             bytea       NOT NULL CHECK (length(seed) = 32),
    entry_key        bytea       NOT NULL CHECK (length(entry_key) = 32),
    commitment       bytea       NOT NULL CHECK (length(commitment) = 32),
    entries_open_at  timestamptz NOT NULL,
    entries_close_at timestamptz NOT NULL CHECK (entries_close_at > entries_open_at),
    entries_hash     bytea       CHECK (length(entries_hash) = 32),
    entry_count      bigint      NOT NULL DEFAULT 0,
    closed_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE draw_entries (
    item_id    bigint      NOT NULL REFERENCES draws (item_id),
    entry_id   bytea       NOT NULL CHECK (length(entry_id) = 32),
    user_id    bigint      NOT NULL REFERENCES users (id),
    entered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (item_id, entry_id),
    UNIQUE (item_id, user_id)
);

CREATE TABLE draw_rounds (
    item_id     bigint      NOT NULL REFERENCES draws (item_id),
    round       integer     NOT NULL CHECK (round >= 0),
    first_place integer     NOT NULL CHECK (first_place >= 0),
    count       integer     NOT NULL CHECK (count >= 0),
    fixed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (item_id, round)
);

CREATE FUNCTION draws_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seed <> OLD.seed OR NEW.entry_key <> OLD.entry_key OR NEW.commitment <> OLD.commitment
       OR NEW.item_id <> OLD.item_id OR NEW.entries_open_at <> OLD.entries_open_at
       OR NEW.entries_close_at <> OLD.entries_close_at
       OR (OLD.entries_hash IS NOT NULL AND (NEW.entries_hash IS DISTINCT FROM OLD.entries_hash
           OR NEW.entry_count <> OLD.entry_count)) THEN
        RAISE EXCEPTION 'a draw''s seed, commitment and closed entry list never change' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER draws_frozen BEFORE UPDATE ON draws FOR EACH ROW EXECUTE FUNCTION draws_frozen();

CREATE FUNCTION draw_entries_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'draw entries are never changed or removed' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM draws WHERE item_id = NEW.item_id AND entries_hash IS NOT NULL) THEN
        RAISE EXCEPTION 'the entries of this draw are closed' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER draw_entries_frozen BEFORE INSERT OR UPDATE OR DELETE ON draw_entries
    FOR EACH ROW EXECUTE FUNCTION draw_entries_frozen();

CREATE FUNCTION draw_rounds_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a fixed round of a draw never changes' USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER draw_rounds_frozen BEFORE UPDATE OR DELETE ON draw_rounds
    FOR EACH ROW EXECUTE FUNCTION draw_rounds_frozen();
