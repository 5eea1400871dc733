package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/draw"
)

// DrawItem stores a draw item whose entries open at open and close at
// closeAt, with a fresh seed and key.
func DrawItem(t testing.TB, db Store, open, closeAt time.Time) (seckill.Item, seckill.DrawRecord) {
	t.Helper()
	seed, _ := draw.NewSecret()
	key, _ := draw.NewSecret()
	c := draw.Commitment(seed)
	rules := seckill.SaleRules{Allocation: seckill.AllocationDraw, EntriesOpenAt: open, EntriesCloseAt: closeAt,
		DrawAt: closeAt, ClaimWindow: seckill.Duration(time.Minute), Waitlist: 2, DrawCommitment: c.String()}
	rec := seckill.DrawRecord{Seed: seed[:], Key: key[:], Commitment: c[:], EntriesOpenAt: open, EntriesCloseAt: closeAt}
	it, err := db.CreateDrawItem(context.Background(), seckill.Item{Name: "draw", Stock: 3, StartsAt: closeAt,
		EndsAt: closeAt.Add(time.Hour), Challenge: "none", SaleRules: rules}, rec)
	if err != nil {
		t.Fatalf("CreateDrawItem: %v", err)
	}
	return it, rec
}

func entryID(rec seckill.DrawRecord, user int64) []byte {
	var k draw.ID
	copy(k[:], rec.Key)
	id := draw.EntryID(k, user)
	return id[:]
}

// drawCase: the item and its draw are stored together; one entry per
// account (a repeat answers the first entry, also under concurrency);
// entries only in their window; closing stores the hash of the sorted ids
// once; rounds are fixed by the first caller.
func drawCase(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	ids := Users(t, db, "d1", "d2", "d3", "late")
	now := time.Now()
	it, rec := DrawItem(t, db, now.Add(-time.Second), now.Add(1500*time.Millisecond))
	got, err := db.Draw(ctx, it.ID)
	if err != nil || !bytes.Equal(got.Seed, rec.Seed) || !bytes.Equal(got.Commitment, rec.Commitment) || got.Closed() {
		t.Fatalf("Draw = %+v, %v", got, err)
	}
	stored, err := db.Item(ctx, it.ID)
	if err != nil || stored.DrawCommitment != draw.ID(rec.Commitment).String() {
		t.Fatalf("item's commitment %q, %v", stored.DrawCommitment, err)
	}
	if _, err := db.Draw(ctx, it.ID+1000); seckill.ErrorCode(err) != seckill.ENotFound {
		t.Fatalf("Draw(unknown) = %v, want not_found", err)
	}

	// One entry per account, however many calls at once.
	var wg sync.WaitGroup
	created := make(chan bool, 40)
	for i := 0; i < 40; i++ {
		u := ids[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			en, c, err := db.Enter(ctx, it.ID, u, entryID(rec, u))
			if err != nil || !bytes.Equal(en.EntryID, entryID(rec, u)) {
				t.Errorf("Enter(%d) = %+v, %v", u, en, err)
			}
			created <- c
		}()
	}
	wg.Wait()
	close(created)
	n := 0
	for c := range created {
		if c {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d entries created by 40 calls of 3 accounts, want 3", n)
	}
	if c, err := db.CountEntries(ctx, it.ID); err != nil || c != 3 {
		t.Errorf("CountEntries = %d, %v; want 3", c, err)
	}
	if en, ok, err := db.EntryOf(ctx, it.ID, ids[0]); err != nil || !ok || !bytes.Equal(en.EntryID, entryID(rec, ids[0])) {
		t.Errorf("EntryOf = %+v %v %v", en, ok, err)
	}
	if _, ok, err := db.EntryOf(ctx, it.ID, ids[3]); err != nil || ok {
		t.Errorf("EntryOf(not entered) = %v %v", ok, err)
	}

	// Before the close time, closing does nothing.
	if d, err := db.CloseEntries(ctx, it.ID); err != nil || d.Closed() {
		t.Fatalf("CloseEntries early = %+v, %v; want not closed", d, err)
	}
	time.Sleep(time.Until(it.EntriesCloseAt) + 50*time.Millisecond)
	if _, _, err := db.Enter(ctx, it.ID, ids[3], entryID(rec, ids[3])); seckill.ErrorCode(err) != seckill.ENotLive {
		t.Fatalf("Enter after close time = %v, want not_live", err)
	}
	d, err := db.CloseEntries(ctx, it.ID)
	if err != nil || !d.Closed() || d.EntryCount != 3 {
		t.Fatalf("CloseEntries = %+v, %v", d, err)
	}
	var list []draw.ID
	for _, u := range ids[:3] {
		list = append(list, draw.ID(entryID(rec, u)))
	}
	draw.Sort(list)
	if h := draw.ListHash(list); !bytes.Equal(d.EntriesHash, h[:]) {
		t.Errorf("entries hash %x, want %x", d.EntriesHash, h)
	}
	again, err := db.CloseEntries(ctx, it.ID)
	if err != nil || !bytes.Equal(again.EntriesHash, d.EntriesHash) || !again.ClosedAt.Equal(d.ClosedAt) {
		t.Errorf("second CloseEntries = %+v, %v; want the first one's", again, err)
	}
	// A repeat of an entry is still answered; nobody new gets in.
	if en, c, err := db.Enter(ctx, it.ID, ids[1], entryID(rec, ids[1])); err != nil || c || !bytes.Equal(en.EntryID, entryID(rec, ids[1])) {
		t.Errorf("repeat Enter after close = %+v %v %v", en, c, err)
	}
	entries, err := db.DrawEntries(ctx, it.ID)
	if err != nil || len(entries) != 3 {
		t.Fatalf("DrawEntries = %d, %v", len(entries), err)
	}
	for i, en := range entries {
		if !bytes.Equal(en.EntryID, list[i][:]) {
			t.Errorf("entry %d = %x, want %x (sorted)", i, en.EntryID, list[i])
		}
	}

	// Rounds: the first caller decides.
	r0, err := db.FixRound(ctx, it.ID, seckill.DrawRound{Round: 0, From: 0, Count: 3})
	if err != nil || r0 != (seckill.DrawRound{Round: 0, From: 0, Count: 3}) {
		t.Fatalf("FixRound = %+v, %v", r0, err)
	}
	if r, err := db.FixRound(ctx, it.ID, seckill.DrawRound{Round: 0, From: 0, Count: 1}); err != nil || r != r0 {
		t.Errorf("second FixRound = %+v, %v; want the first %+v", r, err, r0)
	}
	if _, err := db.FixRound(ctx, it.ID, seckill.DrawRound{Round: 1, From: 3, Count: 0}); err != nil {
		t.Fatal(err)
	}
	if rs, err := db.DrawRounds(ctx, it.ID); err != nil || len(rs) != 2 || rs[1].From != 3 {
		t.Errorf("DrawRounds = %+v, %v", rs, err)
	}
}

// drawCloseRace: entries keep arriving while several callers close the
// list at its close time; the stored hash is the hash of exactly the
// entries stored, and nothing lands after it.
func drawCloseRace(t *testing.T, e Engine) {
	ctx := context.Background()
	db := e.Open(t)
	names := make([]string, 120)
	for i := range names {
		names[i] = fmt.Sprintf("racer%d", i)
	}
	ids := Users(t, db, names...)
	now := time.Now()
	it, rec := DrawItem(t, db, now.Add(-time.Second), now.Add(150*time.Millisecond))
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ids); i += 8 {
				_, _, err := db.Enter(ctx, it.ID, ids[i], entryID(rec, ids[i]))
				if err != nil && seckill.ErrorCode(err) != seckill.ENotLive {
					t.Errorf("Enter: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	hashes := make(chan []byte, 4)
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(it.EntriesCloseAt))
			for {
				d, err := db.CloseEntries(ctx, it.ID)
				if err != nil {
					t.Errorf("CloseEntries: %v", err)
					return
				}
				if d.Closed() {
					hashes <- d.EntriesHash
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(hashes)
	var first []byte
	for h := range hashes {
		if first == nil {
			first = h
		} else if !bytes.Equal(h, first) {
			t.Errorf("two closings stored two hashes: %x, %x", first, h)
		}
	}
	entries, err := db.DrawEntries(ctx, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || len(entries) == len(ids) {
		t.Errorf("entries before close: %d of %d: the close did not fall among the entries", len(entries), len(ids))
	}
	h := sha256.New()
	for _, en := range entries {
		h.Write(en.EntryID)
		if !en.EnteredAt.Before(it.EntriesCloseAt) {
			t.Errorf("entry at %v, after the close time %v", en.EnteredAt, it.EntriesCloseAt)
		}
	}
	if !bytes.Equal(h.Sum(nil), first) {
		t.Errorf("the stored hash is not the hash of the %d stored entries", len(entries))
	}
	d, _ := db.Draw(ctx, it.ID)
	if d.EntryCount != int64(len(entries)) {
		t.Errorf("entry_count %d, %d entries stored", d.EntryCount, len(entries))
	}
}
