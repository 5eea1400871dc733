package backend

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"seckill"
	"seckill/httpapi"
	"seckill/username"
)

// hashGate bounds password hashing (bcrypt, about 50-80 ms of one core
// each): at most max(1, cores/2) at once, a short queue of twice that
// waiting at most hashWait, and beyond it 503 overloaded with Retry-After
// at once. A login flood then takes half the cores at most and never
// starves reservations (issue 13 M5).
//
// While RunHashing runs, the hashes run in its child process at the lowest
// CPU priority (hasher.go). Without it (tests, a stopped process) they run
// on the caller's goroutine.
type hashGate struct {
	once  sync.Once
	slots chan struct{}
	queue chan struct{}
	proc  atomic.Pointer[hashProc] // set while RunHashing's process runs
	// runWait bounds the wait for a hash in the process (hashRunWait).
	runWait time.Duration
	// exec runs an operation in this process (hashOp.run; tests replace it).
	exec func(hashOp) hashResult
}

const (
	// hashWait bounds the wait in the queue for a slot.
	hashWait = time.Second
	// hashRunWait bounds the wait for a hash in the low-priority process,
	// which gets little CPU while purchases take it all: then the caller
	// gets 503 overloaded (the hash finishes, unused, before its slot is
	// free again). An answer within hashWait+hashRunWait stays well
	// inside the edge's 10 s backend timeout, so a starved login is an
	// overload answer, never a failed call to the backend.
	hashRunWait = 2 * time.Second
)

func (g *hashGate) init(slots, queue int) {
	g.once.Do(func() {
		if slots <= 0 {
			slots = max(1, runtime.NumCPU()/2)
		}
		if queue < 0 {
			queue = 2 * slots
		}
		g.slots, g.queue = make(chan struct{}, slots), make(chan struct{}, queue)
		g.runWait, g.exec = hashRunWait, hashOp.run
	})
}

var errHashBusy = &httpapi.RetryError{Err: seckill.Errorf(seckill.EOverloaded, "too many password checks in progress; retry shortly"), After: time.Second}

// do runs op holding a hashing slot, in the hashing process when it runs.
func (g *hashGate) do(ctx context.Context, op hashOp) (hashResult, error) {
	g.init(0, -1)
	select {
	case g.slots <- struct{}{}:
	default:
		select {
		case g.queue <- struct{}{}:
		default:
			return hashResult{}, errHashBusy
		}
		t := time.NewTimer(hashWait)
		select {
		case g.slots <- struct{}{}:
			<-g.queue
			t.Stop()
		case <-ctx.Done():
			<-g.queue
			t.Stop()
			return hashResult{}, ctx.Err()
		case <-t.C:
			<-g.queue
			return hashResult{}, errHashBusy
		}
	}
	if p := g.proc.Load(); p != nil {
		if res, ok, err := p.run(ctx, op, g.runWait, func() { <-g.slots }); ok {
			return res, err
		}
	}
	defer func() { <-g.slots }()
	return g.exec(op), nil
}

// SetPasswordHashing bounds password hashing to slots at once and queue
// waiting (before the first login or registration; default max(1,
// cores/2) and twice that).
func (s *Service) SetPasswordHashing(slots, queue int) { s.hash.init(slots, queue) }

// RunHashing runs the password hashing process, argv (`seckill hasher`:
// ServeHasher), until ctx ends, then stops it and waits for it
// (app.StartBackend runs it for the backend's life). The process runs at
// the lowest CPU priority (nice 19, Linux), so a login flood slows logins
// down, and sheds them with 503 overloaded, rather than purchases. With
// no argv, hashing runs in the backend's own goroutines.
func (s *Service) RunHashing(ctx context.Context, argv []string) error {
	s.hash.init(0, -1)
	if len(argv) == 0 {
		return nil
	}
	return runHashProcess(ctx, &s.hash.proc, argv, s.log)
}

// Users is the account store (package postgres).
type Users interface {
	CreateUser(ctx context.Context, username, passwordHash, network string) (int64, error)
	Credentials(ctx context.Context, username string) (int64, string, error)
	// UserByName: the account with its creation time and network, which
	// login returns for the session to carry (eligibility).
	UserByName(ctx context.Context, username string) (seckill.User, error)
	// Accounts: creation time and network of users by id, for the
	// sessions the admin API makes.
	Accounts(ctx context.Context, ids []int64) (map[int64]seckill.Account, error)
	EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error)
}

// Register creates a user with a password, registered from network (the
// /24 or /48 the edge saw the client in, kept on the account as
// User.Network; "" when unknown, as for tools).
//
// The name is stored in NFKC (username.Normalize); one with the key of an
// existing account ("Alice" beside "alice") is 409 username_taken.
func (s *Service) Register(ctx context.Context, name, password, network string) (int64, error) {
	name = username.Normalize(name)
	if err := seckill.ValidateUsername(name); err != nil {
		return 0, err
	}
	if err := seckill.ValidateNetwork(network); err != nil {
		return 0, err
	}
	if err := seckill.ValidatePassword(password); err != nil {
		return 0, err
	}
	if s.users == nil {
		return 0, errors.New("registering: no user store")
	}
	res, err := s.hash.do(ctx, hashOp{Gen: true, Password: []byte(password)})
	if err != nil {
		return 0, err
	}
	if res.Err != "" {
		return 0, fmt.Errorf("hashing the password: %s", res.Err)
	}
	hash := res.Hash
	return s.users.CreateUser(ctx, name, string(hash), network)
}

var (
	dummyOnce sync.Once
	dummyHash []byte
)

// Login checks a username and password and returns the account: its id,
// creation time and registration network (the edge's session carries them
// for eligibility). A wrong name and a wrong password take the same time
// and give the same error.
//
// The name is normalised as at registration: "ALICE" logs in as alice.
func (s *Service) Login(ctx context.Context, name, password string) (seckill.Account, error) {
	name = username.Normalize(name)
	bad := seckill.Errorf(seckill.EBadCredentials, "wrong username or password")
	if s.users == nil {
		return seckill.Account{}, errors.New("logging in: no user store")
	}
	if len(password) > seckill.MaxPassword || seckill.ValidateUsername(name) != nil {
		return seckill.Account{}, bad
	}
	u, err := s.users.UserByName(ctx, name)
	hash := u.PasswordHash
	if err != nil && seckill.ErrorCode(err) != seckill.ENotFound {
		return seckill.Account{}, err
	}
	op := hashOp{Password: []byte(password), Hash: []byte(hash)}
	if err != nil || hash == "" {
		// No such account: the same work, against a hash of nothing.
		dummyOnce.Do(func() { dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost) })
		op.Hash = dummyHash
	}
	res, herr := s.hash.do(ctx, op)
	if herr != nil {
		return seckill.Account{}, herr
	}
	ok := res.OK && err == nil && hash != ""
	if !ok {
		return seckill.Account{}, bad
	}
	return seckill.Account{ID: u.ID, CreatedAt: u.CreatedAt, Network: u.Network}, nil
}

// EnsureUsers returns the ids of the named users, creating the missing ones
// without a password (they can only get sessions from the admin API: load
// tests use it).
func (s *Service) EnsureUsers(ctx context.Context, usernames []string) (map[string]int64, error) {
	if len(usernames) == 0 || len(usernames) > seckill.MaxEnsureUsers {
		return nil, seckill.Errorf(seckill.EInvalid, "usernames must hold 1 to %d names", seckill.MaxEnsureUsers)
	}
	for _, n := range usernames {
		if err := seckill.ValidateUsername(n); err != nil {
			return nil, seckill.Errorf(seckill.EInvalid, "username %q: must be 3 to 32 characters of A-Z, a-z, 0-9, '_', '.', '-'", n)
		}
	}
	if s.users == nil {
		return nil, errors.New("ensuring users: no user store")
	}
	// Stored in NFKC, answered under the names asked for.
	norm := make([]string, len(usernames))
	for i, n := range usernames {
		norm[i] = username.Normalize(n)
	}
	ids, err := s.users.EnsureUsers(ctx, norm)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(usernames))
	for i, n := range usernames {
		out[n] = ids[norm[i]]
	}
	return out, nil
}

// EnsureAccounts is EnsureUsers answering each account with its creation
// time and registration network, which the sessions the admin API makes
// carry (eligibility: a session that does not say when its account was made
// is refused by sales with rules).
func (s *Service) EnsureAccounts(ctx context.Context, usernames []string) (map[string]seckill.Account, error) {
	ids, err := s.EnsureUsers(ctx, usernames)
	if err != nil {
		return nil, err
	}
	list := make([]int64, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	accts, err := s.users.Accounts(ctx, list)
	if err != nil {
		return nil, err
	}
	out := make(map[string]seckill.Account, len(ids))
	for name, id := range ids {
		a, ok := accts[id]
		if !ok {
			a = seckill.Account{ID: id}
		}
		out[name] = a
	}
	return out, nil
}
