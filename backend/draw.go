package backend

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"seckill"
	"seckill/draw"
)

// DrawStore keeps draws durably (packages postgres and sqlite): the secret
// seed and key, the entries, the entry list's hash once closed, and the
// fixed rounds of offers.
type DrawStore interface {
	CreateDrawItem(ctx context.Context, it seckill.Item, d seckill.DrawRecord) (seckill.Item, error)
	Draw(ctx context.Context, itemID int64) (seckill.DrawRecord, error)
	Enter(ctx context.Context, itemID, userID int64, entryID []byte) (seckill.DrawEntry, bool, error)
	EntryOf(ctx context.Context, itemID, userID int64) (seckill.DrawEntry, bool, error)
	CountEntries(ctx context.Context, itemID int64) (int64, error)
	CloseEntries(ctx context.Context, itemID int64) (seckill.DrawRecord, error)
	DrawEntries(ctx context.Context, itemID int64) ([]seckill.DrawEntry, error)
	FixRound(ctx context.Context, itemID int64, r seckill.DrawRound) (seckill.DrawRound, error)
	DrawRounds(ctx context.Context, itemID int64) ([]seckill.DrawRound, error)
}

// draws is the backend's side of the draw. What it keeps in memory is
// only what can never change: items (there is no route that changes one),
// a closed draw record, the draw's result (a function of the seed and the
// closed list) and fixed rounds. Everything else is read from the store on
// every call, so no backend serves a stale entry list or state.
type draws struct {
	store DrawStore // nil: this store keeps no draws

	mu      sync.Mutex
	items   map[int64]seckill.Item
	closed  map[int64]seckill.DrawRecord
	results map[int64]*drawResult
	rounds  map[int64][]seckill.DrawRound
}

// drawResult is a made draw.
type drawResult struct {
	order []draw.ID           // the first stock + waitlist places
	place map[int64]int       // user id -> 0-based place, for the places in order
	ids   map[int64]draw.ID   // user id -> entry id, every entry
	at    map[int64]time.Time // user id -> when the entry was taken
}

func newDraws(db Catalog) *draws {
	d := &draws{items: map[int64]seckill.Item{}, closed: map[int64]seckill.DrawRecord{},
		results: map[int64]*drawResult{}, rounds: map[int64][]seckill.DrawRound{}}
	if s, ok := db.(DrawStore); ok {
		d.store = s
	}
	return d
}

func (d *draws) remember(items ...seckill.Item) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, it := range items {
		d.items[it.ID] = it
	}
}

// noDraws is the answer when the store keeps no draws.
var noDraws = seckill.Errorf(seckill.EConflict, "this backend's store keeps no draws")

// dbCtx bounds one call to the store by DBTimeout.
func dbCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, DBTimeout)
}

// createDrawItem makes the draw's secrets and stores them with the item in
// one transaction; the item carries the commitment from then on.
func (s *Service) createDrawItem(ctx context.Context, it seckill.Item) (seckill.Item, error) {
	if s.draw.store == nil {
		return seckill.Item{}, noDraws
	}
	if !it.EntriesOpenAt.After(s.now()) {
		return seckill.Item{}, seckill.Errorf(seckill.EInvalid, "entries_open_at must be in the future: the commitment is published before entries open")
	}
	seed, err := draw.NewSecret()
	if err != nil {
		return seckill.Item{}, err
	}
	key, err := draw.NewSecret()
	if err != nil {
		return seckill.Item{}, err
	}
	c := draw.Commitment(seed)
	it.DrawCommitment = c.String()
	rec := seckill.DrawRecord{Seed: seed[:], Key: key[:], Commitment: c[:], EntriesOpenAt: it.EntriesOpenAt, EntriesCloseAt: it.EntriesCloseAt}
	ctx, cancel := dbCtx(ctx)
	defer cancel()
	stored, err := s.draw.store.CreateDrawItem(ctx, it, rec)
	if err != nil {
		return seckill.Item{}, fmt.Errorf("creating item: %w", err)
	}
	s.draw.remember(stored)
	return stored, nil
}

// drawItem returns an item with allocation draw, from memory (items never
// change) or the store.
func (s *Service) drawItem(ctx context.Context, itemID int64) (seckill.Item, error) {
	s.draw.mu.Lock()
	it, ok := s.draw.items[itemID]
	s.draw.mu.Unlock()
	if !ok {
		var err error
		if it, err = s.itemAnyhow(ctx, itemID); err != nil {
			return it, err
		}
		s.draw.remember(it)
	}
	if it.AllocationMode() != seckill.AllocationDraw {
		return it, seckill.Errorf(seckill.EConflict, "item %d has no draw (allocation %s)", itemID, it.AllocationMode())
	}
	if s.draw.store == nil {
		return it, noDraws
	}
	return it, nil
}

// itemAnyhow reads an item from the store, or from the last item list
// while the store is away.
func (s *Service) itemAnyhow(ctx context.Context, itemID int64) (seckill.Item, error) {
	it, err := s.db.Item(ctx, itemID)
	if err != nil && seckill.ErrorCode(err) == seckill.EDependency {
		items, _ := s.cat.lastItems()
		for _, c := range items {
			if c.ID == itemID {
				return c, nil
			}
		}
	}
	if err != nil {
		return it, storeError(err, "postgres")
	}
	return it, nil
}

// record returns the draw's record, closing the entry list first when
// entries_close_at has passed (CloseEntries: the store decides, once, on
// its clock). A closed record is kept in memory: it never changes.
func (s *Service) record(ctx context.Context, it seckill.Item) (seckill.DrawRecord, error) {
	s.draw.mu.Lock()
	rec, ok := s.draw.closed[it.ID]
	s.draw.mu.Unlock()
	if ok {
		return rec, nil
	}
	ctx, cancel := dbCtx(ctx)
	defer cancel()
	rec, err := s.draw.store.Draw(ctx, it.ID)
	if err == nil && !rec.Closed() && !s.now().Before(it.EntriesCloseAt) {
		rec, err = s.draw.store.CloseEntries(ctx, it.ID)
		if err == nil && rec.Closed() {
			s.log.Info("draw entries closed", "item", it.ID, "entries", rec.EntryCount, "entries_hash", hex.EncodeToString(rec.EntriesHash))
		}
	}
	if err != nil {
		return rec, storeError(err, "postgres")
	}
	if rec.Closed() {
		s.draw.mu.Lock()
		s.draw.closed[it.ID] = rec
		s.draw.mu.Unlock()
	}
	return rec, nil
}

// drawn reports whether the draw is made: entries closed and draw_at
// passed. Only then is the seed used or shown.
func (s *Service) drawn(it seckill.Item, rec seckill.DrawRecord) bool {
	return rec.Closed() && !s.now().Before(it.DrawAt)
}

// result makes the draw (once per backend; every backend makes the same):
// the entries are read, checked against the stored hash, and ranked.
func (s *Service) result(ctx context.Context, it seckill.Item, rec seckill.DrawRecord) (*drawResult, error) {
	s.draw.mu.Lock()
	res, ok := s.draw.results[it.ID]
	s.draw.mu.Unlock()
	if ok {
		return res, nil
	}
	dctx, cancel := dbCtx(ctx)
	defer cancel()
	entries, err := s.draw.store.DrawEntries(dctx, it.ID)
	if err != nil {
		return nil, storeError(err, "postgres")
	}
	ids := make([]draw.ID, len(entries))
	byID := make(map[draw.ID]int64, len(entries))
	res = &drawResult{ids: make(map[int64]draw.ID, len(entries)), at: make(map[int64]time.Time, len(entries))}
	for i, e := range entries {
		copy(ids[i][:], e.EntryID)
		byID[ids[i]] = e.UserID
		res.ids[e.UserID] = ids[i]
		res.at[e.UserID] = e.EnteredAt.UTC()
	}
	draw.Sort(ids)
	h := draw.ListHash(ids)
	if int64(len(ids)) != rec.EntryCount || !bytes.Equal(h[:], rec.EntriesHash) {
		// The stored list is not the one whose hash was published: never
		// draw from it.
		s.log.Error("draw entries differ from the published hash", "item", it.ID, "entries", len(ids), "published_entries", rec.EntryCount)
		return nil, fmt.Errorf("item %d: the stored entries (%d) do not match the published entry list hash", it.ID, len(ids))
	}
	var seed draw.ID
	copy(seed[:], rec.Seed)
	res.order = draw.Rank(seed, ids, int(it.Stock+it.Waitlist))
	res.place = make(map[int64]int, len(res.order))
	for p, id := range res.order {
		res.place[byID[id]] = p
	}
	s.draw.mu.Lock()
	s.draw.results[it.ID] = res
	s.draw.mu.Unlock()
	s.log.Info("draw made", "item", it.ID, "entries", len(ids), "places", len(res.order))
	return res, nil
}

func schedule(it seckill.Item) draw.Schedule {
	return draw.Schedule{DrawAt: it.DrawAt, EndsAt: it.EndsAt, Window: it.ClaimWindow.D()}
}

// fixRounds returns the rounds of offers up to the one running now,
// fixing those not fixed yet (the first backend to get there decides; the
// store keeps its answer). Round 0 offers the first stock places; each
// later round offers the next places, as many as units are left in Redis
// when it starts (no earlier window is open then: see draw.Settle).
func (s *Service) fixRounds(ctx context.Context, it seckill.Item, res *drawResult) ([]seckill.DrawRound, error) {
	sched := schedule(it)
	cur := sched.RoundAt(s.now())
	s.draw.mu.Lock()
	rounds := s.draw.rounds[it.ID]
	s.draw.mu.Unlock()
	k := len(res.order)
	next := func(rs []seckill.DrawRound) int {
		if len(rs) == 0 {
			return 0
		}
		last := rs[len(rs)-1]
		return last.From + last.Count
	}
	if len(rounds) > cur || next(rounds) >= k && len(rounds) > 0 {
		return rounds, nil
	}
	dctx, cancel := dbCtx(ctx)
	defer cancel()
	stored, err := s.draw.store.DrawRounds(dctx, it.ID)
	if err != nil {
		return nil, storeError(err, "postgres")
	}
	rounds = stored
	for r := len(rounds); r <= cur && (r == 0 || next(rounds) < k); r++ {
		want := seckill.DrawRound{Round: r, From: next(rounds)}
		if r == 0 {
			want.Count = min(int(it.Stock), k)
		} else {
			c, err := s.st.Counters(ctx, it.ID)
			if err != nil {
				return nil, err
			}
			left := c.StockLeft
			if !c.Loaded {
				n, err := s.db.CountOrders(ctx, it.ID)
				if err != nil {
					return nil, storeError(err, "postgres")
				}
				left = it.Stock - n
			}
			want.Count = max(0, min(int(left), k-want.From))
		}
		got, err := s.draw.store.FixRound(dctx, it.ID, want)
		if err != nil {
			return nil, storeError(err, "postgres")
		}
		if got != want {
			s.log.Info("draw round fixed by another backend", "item", it.ID, "round", r)
		} else {
			s.log.Info("draw round fixed", "item", it.ID, "round", r, "from", got.From, "count", got.Count)
		}
		rounds = append(rounds, got)
	}
	s.draw.mu.Lock()
	if len(rounds) > len(s.draw.rounds[it.ID]) {
		s.draw.rounds[it.ID] = rounds
	}
	s.draw.mu.Unlock()
	return rounds, nil
}

// Enter enters a user in an item's draw, once (a repeat answers the same
// entry, Created false). Eligibility is the edge's check (409
// not_eligible); the time window is the store's.
func (s *Service) Enter(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	if itemID <= 0 || userID <= 0 {
		return seckill.EntryState{}, seckill.Errorf(seckill.EInvalid, "item_id and user_id must be positive")
	}
	it, err := s.drawItem(ctx, itemID)
	if err != nil {
		return seckill.EntryState{}, err
	}
	rec, err := s.record(ctx, it)
	if err != nil {
		return seckill.EntryState{}, err
	}
	if rec.Closed() {
		// Known closed: answer a repeat, refuse a newcomer, without a write.
		return s.Entry(ctx, itemID, userID)
	}
	var key draw.ID
	copy(key[:], rec.Key)
	id := draw.EntryID(key, userID)
	dctx, cancel := dbCtx(ctx)
	defer cancel()
	e, created, err := s.draw.store.Enter(dctx, itemID, userID, id[:])
	if err != nil {
		return seckill.EntryState{}, storeError(err, "postgres")
	}
	if subtle.ConstantTimeCompare(e.EntryID, id[:]) != 1 {
		return seckill.EntryState{}, fmt.Errorf("entry of user %d in item %d has another id than its key makes", userID, itemID)
	}
	return seckill.EntryState{State: seckill.EntryEntered, EntryID: hex.EncodeToString(e.EntryID), EnteredAt: e.EnteredAt.UTC(), Created: created}, nil
}

// Entry tells a user where they stand in an item's draw. After the
// entries closed, a user without an entry is refused by Enter with
// not_live, and Entry answers none.
func (s *Service) Entry(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	it, err := s.drawItem(ctx, itemID)
	if err != nil {
		return seckill.EntryState{}, err
	}
	rec, err := s.record(ctx, it)
	if err != nil {
		return seckill.EntryState{}, err
	}
	if s.drawn(it, rec) {
		// Made: everything is in memory (polled by every entrant at once).
		return s.drawnEntry(ctx, it, rec, userID)
	}
	dctx, cancel := dbCtx(ctx)
	e, ok, err := s.draw.store.EntryOf(dctx, itemID, userID)
	cancel()
	if err != nil {
		return seckill.EntryState{}, storeError(err, "postgres")
	}
	if !ok {
		if rec.Closed() || !s.now().Before(it.EntriesCloseAt) {
			return seckill.EntryState{}, seckill.Errorf(seckill.ENotLive, "entries are closed and you have no entry")
		}
		return seckill.EntryState{State: seckill.EntryNone}, nil
	}
	return seckill.EntryState{State: seckill.EntryEntered, EntryID: hex.EncodeToString(e.EntryID), EnteredAt: e.EnteredAt.UTC()}, nil
}

// drawnEntry is Entry once the draw is made, from the result in memory.
func (s *Service) drawnEntry(ctx context.Context, it seckill.Item, rec seckill.DrawRecord, userID int64) (seckill.EntryState, error) {
	res, err := s.result(ctx, it, rec)
	if err != nil {
		return seckill.EntryState{}, err
	}
	id, ok := res.ids[userID]
	if !ok {
		return seckill.EntryState{}, seckill.Errorf(seckill.ENotLive, "entries are closed and you have no entry")
	}
	rounds, err := s.fixRounds(ctx, it, res)
	if err != nil {
		return seckill.EntryState{}, err
	}
	st := seckill.EntryState{State: seckill.EntryEntered, EntryID: id.String(), EnteredAt: res.at[userID]}
	placeState(&st, it, res, rounds, userID)
	return st, nil
}

// placeState fills in the state of a drawn entry.
func placeState(st *seckill.EntryState, it seckill.Item, res *drawResult, rounds []seckill.DrawRound, userID int64) {
	p, ok := res.place[userID]
	if !ok {
		st.State = seckill.EntryLost
		return
	}
	st.Place = p + 1
	sched := schedule(it)
	for _, r := range rounds {
		if p >= r.From && p < r.From+r.Count {
			st.State = seckill.EntryWon
			st.ClaimFrom, st.ClaimUntil, _ = sched.WindowOf(r.Round)
			st.ClaimFrom, st.ClaimUntil = st.ClaimFrom.UTC(), st.ClaimUntil.UTC()
			return
		}
	}
	// Not offered yet: waitlisted while a later round can still come.
	if _, _, more := sched.WindowOf(len(rounds)); more && p >= int(it.Stock) {
		st.State = seckill.EntryWaitlisted
		return
	}
	st.State = seckill.EntryLost
}

// drawGate lets a purchase of a draw item through only for a user whose
// place has been offered a unit and whose claim window is open (by this
// backend's clock); others get 409 not_eligible before the reservation
// script. A user who already holds a unit goes on to the script, which
// answers a retried request with its first answer. Items of other
// allocations pass.
func (s *Service) drawGate(ctx context.Context, itemID, userID int64) error {
	s.draw.mu.Lock()
	it, ok := s.draw.items[itemID]
	s.draw.mu.Unlock()
	if ok && it.AllocationMode() != seckill.AllocationDraw {
		return nil
	}
	it, err := s.drawItem(ctx, itemID)
	switch seckill.ErrorCode(err) {
	case seckill.EConflict:
		if it.ID != 0 && it.AllocationMode() != seckill.AllocationDraw {
			return nil
		}
	case seckill.EUnknownItem:
		return nil // the reservation script answers unknown_item
	}
	if err != nil {
		return err
	}
	st, err := s.gateState(ctx, it, userID)
	if err != nil {
		return err
	}
	now := s.now()
	if st.State == seckill.EntryWon && !now.Before(st.ClaimFrom) && now.Before(st.ClaimUntil) {
		return nil
	}
	if _, held, herr := s.st.Buyer(ctx, itemID, userID); herr == nil && held {
		return nil
	}
	why := "you have no entry in this draw"
	switch st.State {
	case seckill.EntryEntered:
		why = "the draw is not made yet"
	case seckill.EntryWaitlisted:
		why = "you are on the waitlist; no unit has been offered to your place yet"
	case seckill.EntryLost:
		why = "you were not drawn"
	case seckill.EntryWon:
		why = fmt.Sprintf("your claim window is %s to %s", st.ClaimFrom.Format(time.RFC3339), st.ClaimUntil.Format(time.RFC3339))
	}
	return seckill.Errorf(seckill.ENotDrawn, "this sale is a draw: %s", why)
}

// gateState is Entry for a purchase, from memory once the draw is made
// (the closed record, the result and the rounds up to now are kept): no
// store read per purchase. Before the draw it only says entered or none.
func (s *Service) gateState(ctx context.Context, it seckill.Item, userID int64) (seckill.EntryState, error) {
	rec, err := s.record(ctx, it)
	if err != nil {
		return seckill.EntryState{}, err
	}
	if !s.drawn(it, rec) {
		return seckill.EntryState{State: seckill.EntryEntered}, nil // refused either way: no unit before the draw
	}
	res, err := s.result(ctx, it, rec)
	if err != nil {
		return seckill.EntryState{}, err
	}
	if _, ok := res.ids[userID]; !ok {
		return seckill.EntryState{State: seckill.EntryNone}, nil
	}
	rounds, err := s.fixRounds(ctx, it, res)
	if err != nil {
		return seckill.EntryState{}, err
	}
	var st seckill.EntryState
	placeState(&st, it, res, rounds, userID)
	return st, nil
}

// Draw returns the public state of an item's draw. The seed is in it only
// once the draw is made (entries closed and draw_at passed).
func (s *Service) Draw(ctx context.Context, itemID int64) (seckill.DrawView, error) {
	it, err := s.drawItem(ctx, itemID)
	if err != nil {
		return seckill.DrawView{}, err
	}
	rec, err := s.record(ctx, it)
	if err != nil {
		return seckill.DrawView{}, err
	}
	now := s.now()
	v := seckill.DrawView{ItemID: it.ID, Now: now.UTC(), EntriesOpenAt: it.EntriesOpenAt, EntriesCloseAt: it.EntriesCloseAt,
		DrawAt: it.DrawAt, ClaimWindow: it.ClaimWindow, Stock: it.Stock, Waitlist: it.Waitlist,
		Commitment: hex.EncodeToString(rec.Commitment), Entries: rec.EntryCount}
	switch {
	case now.Before(it.EntriesOpenAt) && !rec.Closed():
		v.State = seckill.DrawUpcoming
	case !rec.Closed():
		v.State = seckill.DrawOpen
	case !s.drawn(it, rec):
		v.State = seckill.DrawClosed
	default:
		v.State = seckill.DrawDrawn
	}
	if !rec.Closed() {
		dctx, cancel := dbCtx(ctx)
		n, err := s.draw.store.CountEntries(dctx, it.ID)
		cancel()
		if err != nil {
			return seckill.DrawView{}, storeError(err, "postgres")
		}
		v.Entries = n
	} else {
		v.EntriesHash, v.ClosedAt = hex.EncodeToString(rec.EntriesHash), rec.ClosedAt.UTC()
	}
	c, err := s.st.Counters(ctx, it.ID)
	if err != nil {
		return seckill.DrawView{}, err
	}
	v.StockLeft = c.StockLeft
	if !c.Loaded {
		v.StockLeft = it.Stock
	}
	if v.State != seckill.DrawDrawn {
		return v, nil
	}
	v.Seed = hex.EncodeToString(rec.Seed)
	res, err := s.result(ctx, it, rec)
	if err != nil {
		return seckill.DrawView{}, err
	}
	rounds, err := s.fixRounds(ctx, it, res)
	if err != nil {
		return seckill.DrawView{}, err
	}
	v.Order = make([]string, len(res.order))
	for i, id := range res.order {
		v.Order[i] = id.String()
	}
	sched := schedule(it)
	for _, r := range rounds {
		from, until, _ := sched.WindowOf(r.Round)
		v.Rounds = append(v.Rounds, seckill.DrawRoundView{DrawRound: r, ClaimFrom: from.UTC(), ClaimUntil: until.UTC()})
	}
	return v, nil
}

// DrawEntries exports the entry list of a closed draw: the sorted ids
// whose hash was published. Before entries close: not_live.
func (s *Service) DrawEntries(ctx context.Context, itemID int64) (seckill.EntryList, error) {
	it, err := s.drawItem(ctx, itemID)
	if err != nil {
		return seckill.EntryList{}, err
	}
	rec, err := s.record(ctx, it)
	if err != nil {
		return seckill.EntryList{}, err
	}
	if !rec.Closed() {
		return seckill.EntryList{}, seckill.Errorf(seckill.ENotLive, "the entry list is published when entries close (%s)", it.EntriesCloseAt.Format(time.RFC3339))
	}
	dctx, cancel := dbCtx(ctx)
	defer cancel()
	entries, err := s.draw.store.DrawEntries(dctx, itemID)
	if err != nil {
		return seckill.EntryList{}, storeError(err, "postgres")
	}
	out := seckill.EntryList{ItemID: itemID, EntriesHash: hex.EncodeToString(rec.EntriesHash), Entries: make([]string, len(entries))}
	for i, e := range entries {
		out.Entries[i] = hex.EncodeToString(e.EntryID)
	}
	return out, nil
}
