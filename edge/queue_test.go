package edge

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/internal/rkeys"
	"seckill/internal/testenv"
	"seckill/stock"
)

// queueEnv is a waiting room on the real Redis with one item loaded by the
// stock package (the reservation script's own keys).
type queueEnv struct {
	rdb *redis.Client
	w   *waitingRoom
	st  *stock.Store
	it  seckill.Item
}

func newQueueEnv(t *testing.T, units int64, starts time.Time, r seckill.SaleRules) *queueEnv {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	r.Allocation = seckill.AllocationQueue
	it := seckill.Item{ID: 7, Name: "q", Stock: units, StartsAt: starts, EndsAt: starts.Add(time.Hour), SaleRules: r}
	st := stock.New(rdb, prefix)
	if err := st.LoadItem(context.Background(), it, nil, nil); err != nil {
		t.Fatal(err)
	}
	w := newWaitingRoom(rdb, prefix, time.Second, 0)
	w.tick = 0 // a step on every call: the tests decide when time passes
	return &queueEnv{rdb: rdb, w: w, st: st, it: it}
}

func (q *queueEnv) join(t *testing.T, user int64) queueStatus {
	t.Helper()
	s, err := q.w.run(context.Background(), opJoin, q.it, user, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (q *queueEnv) poll(t *testing.T, user int64) queueStatus {
	t.Helper()
	s, err := q.w.run(context.Background(), opPoll, q.it, user, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQueueArrivalOrderAfterStart: after the start, each arrival takes the
// next place, sequential or concurrent: the positions told at joining are
// exactly 1..n, each told once, and a later poll tells the same position.
// Pre-queue tickets stay ahead of every later arrival.
func TestQueueArrivalOrderAfterStart(t *testing.T) {
	// 1 admission a minute: nobody is admitted while the test runs.
	q := newQueueEnv(t, 1000, time.Now().Add(300*time.Millisecond), seckill.SaleRules{NewUsersPerMinute: 1})
	for u := int64(1); u <= 5; u++ { // the pre-queue
		if s := q.join(t, u); s.State != qWaiting {
			t.Fatalf("pre-queue join: %+v", s)
		}
	}
	time.Sleep(time.Until(q.it.StartsAt))
	const seq = 100
	for i := int64(1); i <= seq; i++ {
		s := q.join(t, 100+i)
		if s.State != qWaiting || s.Position != 5+i {
			t.Fatalf("arrival %d after the start: %+v, want position %d", i, s, 5+i)
		}
	}
	// Concurrent arrivals: every position from 106 on, each exactly once,
	// and each user keeps the position its join told.
	const conc = 400
	got := make([]int64, conc)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < conc; i += 8 {
				s, err := q.w.run(context.Background(), opJoin, q.it, int64(1000+i), 1)
				if err != nil {
					t.Error(err)
					return
				}
				got[i] = s.Position
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, p := range got {
		if p < 5+seq+1 || p > 5+seq+conc || seen[p] {
			t.Fatalf("concurrent arrival %d told position %d (seen before: %v)", i, p, seen[p])
		}
		seen[p] = true
		if s := q.poll(t, int64(1000+i)); s.Position != p {
			t.Fatalf("user %d: joined at %d, polls %d", 1000+i, p, s.Position)
		}
	}
	for u := int64(1); u <= 5; u++ {
		if s := q.poll(t, u); s.Position < 1 || s.Position > 5 {
			t.Fatalf("pre-queue user %d at %d, want 1..5", u, s.Position)
		}
	}
	// Joining again is the same ticket at the same place.
	a, b := q.join(t, 150), q.join(t, 150)
	if a.Ticket == "" || a.Ticket != b.Ticket || a.Position != b.Position || b.Waiting != 5+seq+conc {
		t.Fatalf("joining twice: %+v then %+v", a, b)
	}
}

// TestQueuePreQueueUniform: 10,000 arrivals before the start get places
// independent of their arrival: the 10×10 table of arrival decile by final
// position decile passes a chi-square test of independence (81 degrees of
// freedom, α = 0.001). Places given in arrival order put everything on the
// diagonal (χ² = 90,000).
func TestQueuePreQueueUniform(t *testing.T) {
	const n, bins = 10_000, 10
	q := newQueueEnv(t, 10, time.Now().Add(time.Hour), seckill.SaleRules{})
	for i := range int64(n) {
		if s := q.join(t, i+1); s.State != qWaiting {
			t.Fatalf("join %d: %+v", i, s)
		}
	}
	order, err := q.rdb.ZRange(context.Background(), rkeys.Space(q.w.prefix).Queue(q.it.ID).Waiting, 0, -1).Result()
	if err != nil || len(order) != n {
		t.Fatalf("waiting list: %d, %v", len(order), err)
	}
	var table [bins][bins]float64
	for rank, u := range order {
		user, _ := strconv.Atoi(u)
		arrival := user - 1
		table[arrival*bins/n][rank*bins/n]++
	}
	exp := float64(n) / (bins * bins)
	chi := 0.0
	for i := range bins {
		for j := range bins {
			d := table[i][j] - exp
			chi += d * d / exp
		}
	}
	crit := chiSquareCritical(81, 3.090) // z of 0.999
	t.Logf("chi-square %.1f (81 df), critical %.1f at α=0.001", chi, crit)
	if chi > crit {
		t.Fatalf("pre-queue places depend on arrival: chi-square %.1f > %.1f\n%v", chi, crit, table)
	}
}

// chiSquareCritical is the Wilson–Hilferty approximation of the chi-square
// quantile with df degrees of freedom at the normal quantile z.
func chiSquareCritical(df, z float64) float64 {
	h := 2 / (9 * df)
	return df * math.Pow(1-h+z*math.Sqrt(h), 3)
}

// TestQueueExpiryAdmitsNext: with room for two, the first two are
// admitted; their admissions end after session_duration, the slot is held
// for the grace period, then the next two are admitted.
func TestQueueExpiryAdmitsNext(t *testing.T) {
	q := newQueueEnv(t, 100, time.Now().Add(-time.Second), seckill.SaleRules{
		NewUsersPerMinute: 60_000, TotalActiveUsers: 2, SessionDuration: seckill.Duration(time.Second)})
	q.w.grace = 700 * time.Millisecond
	for u := int64(1); u <= 4; u++ {
		q.join(t, u)
	}
	a, b, c, d := q.poll(t, 1), q.poll(t, 2), q.poll(t, 3), q.poll(t, 4)
	if a.State != qAdmitted || b.State != qAdmitted || c.State != qWaiting || c.Position != 1 || d.Position != 2 || a.Active != 2 {
		t.Fatalf("before expiry: %+v %+v %+v %+v", a, b, c, d)
	}
	if sess := a.Until.Sub(a.Now); sess <= 0 || sess > time.Second {
		t.Fatalf("admitted for %v, want at most 1 s", sess)
	}
	time.Sleep(time.Until(b.Until.Add(100 * time.Millisecond)))
	a, c = q.poll(t, 1), q.poll(t, 3)
	if a.State != qExpired || c.State != qWaiting || c.Active != 0 {
		t.Fatalf("expired, within the grace: %+v %+v", a, c)
	}
	time.Sleep(time.Until(b.Until.Add(q.w.grace + 50*time.Millisecond)))
	c, d = q.poll(t, 3), q.poll(t, 4)
	if c.State != qAdmitted || d.State != qAdmitted || c.Active != 2 || c.Admitted != 4 {
		t.Fatalf("after the grace: %+v %+v", c, d)
	}
	// An expired ticket joins again at the end of the queue, same ticket.
	a2 := q.join(t, 1)
	if a2.State != qWaiting || a2.Ticket != a.Ticket || a2.Position != 1 {
		t.Fatalf("joining again after expiry: %+v (was %+v)", a2, a)
	}
}

// TestQueueAbandonedSkipped: a ticket not polled for abandon_after leaves
// the queue: the positions behind it move up and it is never admitted.
func TestQueueAbandonedSkipped(t *testing.T) {
	// Wide margins (polls every 250 ms against an abandon time of 800 ms,
	// dropped after 1.2 s: dropAfter) so a busy machine's delays cannot
	// make 2 or 3 look abandoned.
	q := newQueueEnv(t, 100, time.Now().Add(1600*time.Millisecond), seckill.SaleRules{
		NewUsersPerMinute: 60_000, TotalActiveUsers: 1, AbandonAfter: seckill.Duration(800 * time.Millisecond)})
	q.join(t, 1) // never polls again
	q.join(t, 2)
	q.join(t, 3)
	for range 7 {
		time.Sleep(250 * time.Millisecond)
		q.poll(t, 2)
		q.poll(t, 3)
	}
	// Now past the start: 1 was dropped; of 2 and 3 (random places in the
	// pre-queue) one is admitted, the other next.
	a, b, c := q.poll(t, 1), q.poll(t, 2), q.poll(t, 3)
	if b.State == qWaiting {
		b, c = c, b
	}
	if a.State != qExpired || b.State != qAdmitted || c.State != qWaiting || c.Position != 1 || c.Waiting != 1 || b.Admitted != 1 {
		t.Fatalf("abandoned: %+v %+v %+v", a, b, c)
	}
}

// TestQueueNeverMoreAdmittedThanUnitsLeft: 300 users poll a room with no
// bound of its own (total_active_users 0) for 20 units, each buying with
// the real reservation script while its pass is valid, or letting it
// expire; a sampler reads the room and the stock in one script all along.
// Admitted users who do not hold a unit never outnumber the units left,
// and every unit is sold exactly once.
func TestQueueNeverMoreAdmittedThanUnitsLeft(t *testing.T) {
	const units, users = 20, 300
	q := newQueueEnv(t, units, time.Now().Add(-time.Second), seckill.SaleRules{
		NewUsersPerMinute: 600_000, SessionDuration: seckill.Duration(400 * time.Millisecond)})
	q.w.grace = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	qk, ik := rkeys.Space(q.w.prefix).Queue(q.it.ID), rkeys.Space(q.w.prefix).Item(q.it.ID)
	sample := redis.NewScript(`
local holders = 0
for _, u in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('HEXISTS', KEYS[3], u) == 0 then holders = holders + 1 end
end
return {holders, tonumber(redis.call('GET', KEYS[2]) or '0')}`)
	var samples, worst atomic.Int64
	stop := make(chan struct{})
	var sw sync.WaitGroup
	sw.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			v, err := sample.Run(ctx, q.rdb, []string{qk.Active, ik.Stock, ik.Buyers}).Int64Slice()
			if err != nil {
				t.Error(err)
				return
			}
			samples.Add(1)
			if over := v[0] - v[1]; over > worst.Load() {
				worst.Store(over)
			}
		}
	})
	var bought atomic.Int64
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			for u := int64(g + 1); u <= users && ctx.Err() == nil; u += 12 {
				for ctx.Err() == nil {
					s, err := q.w.run(ctx, opJoin, q.it, u, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if s.State == qSoldOut || s.State == qBought || s.State == qNone { // none: sold out before joining
						break
					}
					if s.State == qAdmitted {
						if u%3 == 0 { // lets the admission expire
							break
						}
						if time.Now().Before(s.Until) { // the edge's pass check
							if r, err := q.st.Reserve(ctx, q.it.ID, seckill.Account{ID: u}, fmt.Sprintf("r%d", u), fmt.Sprintf("ref%d", u)); err == nil && r.Outcome == stock.Queued {
								bought.Add(1)
							}
						}
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sw.Wait()
	left, _ := q.rdb.Get(ctx, ik.Stock).Int64()
	nb, _ := q.rdb.HLen(ctx, ik.Buyers).Result()
	t.Logf("%d samples, %d bought, worst admitted-without-unit minus units left: %d", samples.Load(), bought.Load(), worst.Load())
	if worst.Load() > 0 {
		t.Fatalf("admitted users without a unit exceeded the units left by %d", worst.Load())
	}
	if bought.Load() != units || left != 0 || nb != units || samples.Load() < 10 {
		t.Fatalf("bought %d, left %d, buyers %d, samples %d; want %d, 0, %d, ≥10", bought.Load(), left, nb, samples.Load(), units, units)
	}
}

// TestQueueJoinReplyLost: a join whose reply is lost is retried by
// go-redis; the retry answers the same ticket and the queue holds one.
func TestQueueJoinReplyLost(t *testing.T) {
	f := testenv.RedisBehindProxy(t)
	it := seckill.Item{ID: 9, Stock: 5, StartsAt: time.Now().Add(time.Hour), EndsAt: time.Now().Add(2 * time.Hour),
		SaleRules: seckill.SaleRules{Allocation: seckill.AllocationQueue}}
	if err := stock.New(f.Direct, f.Prefix).LoadItem(context.Background(), it, nil, nil); err != nil {
		t.Fatal(err)
	}
	w := newWaitingRoom(f.Client, f.Prefix, 0, 0)
	qk := rkeys.Space(f.Prefix).Queue(it.ID)
	s, err := testenv.LoseReply(t, f, func(ctx context.Context) bool {
		return f.Direct.HExists(ctx, qk.Tickets, "5").Val()
	}, func() (queueStatus, error) { return w.run(context.Background(), opJoin, it, 5, 1) })
	if err != nil {
		t.Fatal(err)
	}
	tk := f.Direct.HGet(context.Background(), qk.Tickets, "5").Val()
	if s.Ticket != tk || s.State != qWaiting || s.Position != 1 || s.Waiting != 1 {
		t.Fatalf("after a lost reply: %+v, stored ticket %q", s, tk)
	}
}

func TestAdmissionPass(t *testing.T) {
	t.Parallel()
	p := newAdmissionPasses([]byte("secret-one"), []byte("secret-old"))
	until := time.Now().Add(time.Minute)
	pass := p.sign(4, 9, until)
	if !p.verify(pass, 4, 9) {
		t.Fatal("a fresh pass is refused")
	}
	old := newAdmissionPasses([]byte("secret-old"), nil).sign(4, 9, until)
	other := newAdmissionPasses([]byte("secret-two"), nil).sign(4, 9, until)
	for name, c := range map[string]struct {
		pass       string
		user, item int64
	}{
		"other user": {pass, 5, 9}, "other item": {pass, 4, 8}, "other key": {other, 4, 9},
		"expired": {p.sign(4, 9, time.Now().Add(-time.Millisecond)), 4, 9},
		"flipped": {flip(pass, 2), 4, 9}, "flipped mac": {flip(pass, len(pass)-3), 4, 9},
		"padding bits": {lowBit(pass), 4, 9}, "empty": {"", 4, 9}, "no dot": {"abc", 4, 9},
	} {
		if p.verify(c.pass, c.user, c.item) {
			t.Errorf("%s: accepted", name)
		}
	}
	if !p.verify(old, 4, 9) {
		t.Error("a pass of the previous secret is refused during the rotation")
	}
}

// TestQueueHolderReadsBoughtWithoutTheScan: with units to spare the
// admission step does not check the admitted users against the buyers one
// by one (O(admitted) a tick); an admitted user who took a unit still reads
// "bought" at once, and admissions go on at the rate.
func TestQueueHolderReadsBoughtWithoutTheScan(t *testing.T) {
	q := newQueueEnv(t, 1000, time.Now().Add(-time.Second), seckill.SaleRules{
		NewUsersPerMinute: 60_000, SessionDuration: seckill.Duration(time.Minute)})
	for u := int64(1); u <= 3; u++ {
		q.join(t, u)
	}
	a := q.poll(t, 1)
	if a.State != qAdmitted {
		t.Fatalf("user 1: %+v, want admitted", a)
	}
	r, err := q.st.Reserve(context.Background(), q.it.ID, seckill.Account{ID: 1}, "r1", "ref1")
	if err != nil || r.Outcome != stock.Queued {
		t.Fatalf("reserve: %+v %v", r, err)
	}
	if a = q.poll(t, 1); a.State != qBought || !a.Until.IsZero() {
		t.Fatalf("user 1 after buying: %+v, want bought", a)
	}
	b, c := q.poll(t, 2), q.poll(t, 3)
	if b.State != qAdmitted || c.State != qAdmitted || c.Admitted != 3 || c.Left != 999 {
		t.Fatalf("users 2 and 3: %+v %+v, want both admitted (3 admissions, 999 units left)", b, c)
	}
}
