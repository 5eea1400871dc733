package chaos

import (
	"context"

	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"seckill/apiclient"
	"syscall"
	"time"
)

// Row is one fault of the matrix.
type Row struct {
	Name string
	What string
	// Kills: the fault SIGKILLs a process the buyers talk to (through the
	// edge), so a request in flight may end with no answer: indeterminate
	// buyers are allowed only then.
	Kills bool
	// Options returns the stack this row needs, or a reason to skip it.
	Options func(f Features) (StackOptions, string)
	// Prepare runs before the stack starts (a tmpfs, ...); it returns
	// its own cleanup.
	Prepare func(ctx context.Context, srv *Servers, dir string, opt *StackOptions) (func(), error)
	// Inject starts the fault; Recover ends it (after Hold). Probe is the
	// health check of the returned component.
	Inject  func(ctx context.Context, s *Stack) error
	Hold    time.Duration
	Recover func(ctx context.Context, s *Stack) error
	Probe   func(ctx context.Context, s *Stack) bool
	// StartIn: the sale opens this long after the item is created (by the
	// Redis clock); a 202 before that is a violation.
	StartIn time.Duration
	// MustFlow: purchases must not pause for a second during the fault
	// (they need only Redis and the backend).
	MustFlow bool
	// NoUnavailableAfterProbe: no buy may be refused 503 backend_unavailable
	// once the component is back (a breaker nobody can trip).
	NoUnavailableAfterProbe bool
	// CrashLoss: the fault erases acknowledged writes (everysec and an OS
	// crash): orders told 202 in the lost second may be lost, and their
	// units sold again, without failing the run (docs/RELIABILITY.md says
	// why and what reconcile sees). Stored orders above the stock still fail.
	CrashLoss bool
}

func always(f Features) (StackOptions, string) { return StackOptions{}, "" }

// relayRedis: the relay's Redis connection through toxiproxy.
func relayRedis(f Features) (StackOptions, string) {
	switch {
	case f.RelayCmd:
		return StackOptions{SeparateRelay: true, RelayRedisToxi: true}, ""
	case f.RelayRedisURL:
		return StackOptions{RelayRedisToxi: true}, ""
	}
	return StackOptions{}, "needs `seckill relay` or `seckill backend --relay-redis-url` (branch relay): not in this binary"
}

func separateRelay(f Features) (StackOptions, string) {
	if !f.RelayCmd {
		return StackOptions{}, "needs `seckill relay` (branch relay): not in this binary"
	}
	return StackOptions{SeparateRelay: true}, ""
}

func yes(context.Context, *Stack) bool { return true }

func restart(p func(s *Stack) []*Proc) func(ctx context.Context, s *Stack) error {
	return func(ctx context.Context, s *Stack) error {
		var errs []error
		for _, p := range p(s) {
			errs = append(errs, p.Start())
		}
		return errors.Join(errs...)
	}
}

func kill(p func(s *Stack) []*Proc) func(ctx context.Context, s *Stack) error {
	return func(ctx context.Context, s *Stack) error {
		for _, p := range p(s) {
			p.Kill()
		}
		return nil
	}
}

func toxic(proxy func(s *Stack) string, name, typ string, streams []string, attrs map[string]any) (inject, recover func(ctx context.Context, s *Stack) error) {
	inject = func(ctx context.Context, s *Stack) error {
		for _, st := range streams {
			if err := s.Toxi.AddToxic(proxy(s), name+"-"+st, typ, st, attrs); err != nil {
				return err
			}
		}
		return nil
	}
	recover = func(ctx context.Context, s *Stack) error {
		var errs []error
		for _, st := range streams {
			errs = append(errs, s.Toxi.RemoveToxic(proxy(s), name+"-"+st))
		}
		return errors.Join(errs...)
	}
	return inject, recover
}

var (
	latencyIn, latencyOut = toxic((*Stack).redisProxy, "latency", "latency", []string{"downstream"}, map[string]any{"latency": 200})
	replyLossIn, replyOut = toxic((*Stack).redisProxy, "replyloss", "timeout", []string{"downstream"}, map[string]any{"timeout": 3000})
	partitionIn, partOut  = toxic((*Stack).amqpProxy, "partition", "timeout", []string{"upstream", "downstream"}, map[string]any{"timeout": 0})

	backendLatencyIn, backendLatencyOut = toxic((*Stack).backendRedisProxy, "latency", "latency", []string{"downstream"}, map[string]any{"latency": 200})
)

// Rows is the whole matrix, in order.
func Rows() []Row {
	procs := func(names ...string) func(s *Stack) []*Proc {
		return func(s *Stack) []*Proc {
			var out []*Proc
			for _, n := range names {
				switch n {
				case "worker":
					out = append(out, s.Worker)
				case "backend":
					out = append(out, s.Backend)
					if s.Relay != nil {
						out = append(out, s.Relay)
					}
				case "relay":
					out = append(out, s.Relay)
				case "edge":
					out = append(out, s.Edge)
				}
			}
			return out
		}
	}
	return []Row{
		{Name: "worker-kill", What: "SIGKILL the worker, start it again after 2 s", Kills: false, Options: always,
			Inject: kill(procs("worker")), Hold: 2 * time.Second, Recover: restart(procs("worker")),
			Probe: func(_ context.Context, s *Stack) bool { return s.WorkerHealthy() }},
		{Name: "backend-kill", What: "SIGKILL the backend (and the relay), start them again after 2 s", Kills: true, Options: always,
			Inject: kill(procs("backend")), Hold: 2 * time.Second, Recover: restart(procs("backend")),
			Probe: func(_ context.Context, s *Stack) bool { return s.BackendHealthy() }},
		{Name: "relay-kill", What: "SIGKILL the relay process alone, start it again after 2 s", Options: separateRelay,
			Inject: kill(procs("relay")), Hold: 2 * time.Second, Recover: restart(procs("relay")),
			Probe: func(_ context.Context, s *Stack) bool { return s.RelayHealthy() }},
		{Name: "edge-kill", What: "SIGKILL the edge, start it again on the same ports after 2 s", Kills: true, Options: always,
			Inject: kill(procs("edge")), Hold: 2 * time.Second, Recover: restart(procs("edge")),
			Probe: func(_ context.Context, s *Stack) bool { return s.EdgeHealthy() }},
		{Name: "rabbitmq-kill", What: "kill -9 RabbitMQ, start it again after 1 s (same data)", Options: always,
			Inject:  func(_ context.Context, s *Stack) error { return s.Servers.KillRabbitMQ() },
			Hold:    time.Second,
			Recover: func(ctx context.Context, s *Stack) error { return s.Servers.StartRabbitMQ(ctx) },
			Probe:   func(_ context.Context, s *Stack) bool { return tcpUp(s.Servers.AMQPAddr()) }},
		{Name: "rabbitmq-alarm", What: "RabbitMQ memory alarm (publishers blocked) for 5 s", Options: always,
			Inject: func(ctx context.Context, s *Stack) error {
				return s.Servers.RabbitMQCtl(ctx, "set_vm_memory_high_watermark", "0.0000001")
			},
			Hold: 5 * time.Second,
			Recover: func(ctx context.Context, s *Stack) error {
				return s.Servers.RabbitMQCtl(ctx, "set_vm_memory_high_watermark", "0.4")
			},
			Probe: yes},
		{Name: "redis-kill", What: "kill -9 Redis (appendfsync always), start it again after 1 s", Kills: false, Options: always,
			Inject:  func(_ context.Context, s *Stack) error { s.Redis.Kill(); return nil },
			Hold:    time.Second,
			Recover: func(ctx context.Context, s *Stack) error { return s.Redis.Start(ctx) },
			Probe:   func(ctx context.Context, s *Stack) bool { return s.Redis.Ping(ctx) }},
		{Name: "redis-sigstop", What: "SIGSTOP Redis for 5 s, then SIGCONT", Options: always,
			Inject:  func(_ context.Context, s *Stack) error { return s.Redis.Signal(syscall.SIGSTOP) },
			Hold:    5 * time.Second,
			Recover: func(_ context.Context, s *Stack) error { return s.Redis.Signal(syscall.SIGCONT) },
			Probe:   func(ctx context.Context, s *Stack) bool { return s.Redis.Ping(ctx) }},
		{Name: "relay-redis-latency", What: "toxiproxy: 200 ms latency on the relay's Redis replies for 5 s", Options: relayRedis,
			Inject: latencyIn, Hold: 5 * time.Second, Recover: latencyOut, Probe: yes},
		{Name: "relay-reply-loss", What: "toxiproxy `timeout` toxic: the relay's Redis replies dropped (connection cut after 3 s) for 4 s", Options: relayRedis,
			Inject: replyLossIn, Hold: 4 * time.Second, Recover: replyOut, Probe: yes},
		{Name: "backend-rabbitmq-partition", What: "toxiproxy: relay <-> RabbitMQ blackholed both ways for 6 s", Options: func(f Features) (StackOptions, string) {
			return StackOptions{SeparateRelay: f.RelayCmd, RelayAMQPToxi: true}, ""
		}, Inject: partitionIn, Hold: 6 * time.Second, Recover: partOut, Probe: yes},
		{Name: "postgres-stop", What: "pg_ctl stop -m immediate, start again after 5 s", Options: always,
			Inject:  func(ctx context.Context, s *Stack) error { return s.Servers.StopPostgres(ctx) },
			Hold:    5 * time.Second,
			Recover: func(ctx context.Context, s *Stack) error { return s.Servers.StartPostgres(ctx) },
			Probe:   func(ctx context.Context, s *Stack) bool { return s.Servers.PostgresUp(ctx) }},
		misconfRow(),
		everysecCrashRow(),
		{Name: "edge-clock-skew", What: "the edge's clock 2 s ahead of Redis's; the sale opens 3 s after creation", Options: func(f Features) (StackOptions, string) {
			if !f.ClockOffset {
				return StackOptions{}, "needs `seckill edge --clock-offset` (a test-only hook): not in this binary"
			}
			return StackOptions{EdgeClockSkew: 2 * time.Second}, ""
		}, StartIn: 3 * time.Second, Inject: func(context.Context, *Stack) error { return nil }, Hold: 0,
			Recover: func(context.Context, *Stack) error { return nil }, Probe: yes},
		// Issue 11 rows.
		{Name: "redis-down", What: "kill -9 Redis and keep it down 5 s: every answer a 503 with Retry-After, no 500", Options: always,
			Inject:  func(_ context.Context, s *Stack) error { s.Redis.Kill(); return nil },
			Hold:    5 * time.Second,
			Recover: func(ctx context.Context, s *Stack) error { return s.Redis.Start(ctx) },
			Probe:   func(ctx context.Context, s *Stack) bool { return s.Redis.Ping(ctx) }},
		{Name: "postgres-down", What: "PostgreSQL stopped (-m immediate) for 10 s: purchases keep being accepted", Options: always, MustFlow: true,
			Inject:  func(ctx context.Context, s *Stack) error { return s.Servers.StopPostgres(ctx) },
			Hold:    10 * time.Second,
			Recover: func(ctx context.Context, s *Stack) error { return s.Servers.StartPostgres(ctx) },
			Probe:   func(ctx context.Context, s *Stack) bool { return s.Servers.PostgresUp(ctx) }},
		{Name: "zookeeper-down-at-start", What: "ZooKeeper down while the stack starts; started again mid-sale", Options: always,
			Prepare: func(ctx context.Context, srv *Servers, _ string, _ *StackOptions) (func(), error) {
				if err := srv.StopZooKeeper(ctx); err != nil {
					return nil, err
				}
				return func() { _ = srv.StartZooKeeper(context.WithoutCancel(ctx)) }, nil
			},
			Inject:  func(context.Context, *Stack) error { return nil },
			Hold:    0,
			Recover: func(ctx context.Context, s *Stack) error { return s.Servers.StartZooKeeper(ctx) },
			Probe:   func(_ context.Context, s *Stack) bool { return tcpUp(s.Servers.ZK) }},
		{Name: "backend-redis-latency", What: "toxiproxy: 200 ms latency on every Redis reply to the backend for 5 s", Options: func(Features) (StackOptions, string) {
			return StackOptions{BackendRedisToxi: true}, ""
		}, Inject: backendLatencyIn, Hold: 5 * time.Second, Recover: backendLatencyOut, Probe: yes},
		hungUpRow(),
	}
}

// hungUpRow: five buyers hang up mid-buy (the backend paused so that the
// edge is waiting on it); the breaker must not open for everybody.
func hungUpRow() Row {
	return Row{Name: "hung-up-buys", What: "five buys hung up by their clients while the backend is paused 0.5 s; nobody else refused after", Options: always,
		Kills: true, NoUnavailableAfterProbe: true,
		Inject: func(ctx context.Context, s *Stack) error {
			names := make([]string, 5)
			for i := range names {
				names[i] = fmt.Sprintf("%s-h%d", s.Name, i)
			}
			tokens, err := s.API.Sessions(ctx, names)
			if err != nil {
				return err
			}
			paths := make([]string, len(names))
			for i, n := range names {
				ch, err := s.API.Challenge(ctx, tokens[n], s.Item)
				if err != nil {
					return err
				}
				if paths[i], err = s.API.Path(ctx, tokens[n], s.Item, ch.ID, apiclient.Solve(ch)); err != nil {
					return err
				}
			}
			if err := s.Backend.Signal(syscall.SIGSTOP); err != nil {
				return err
			}
			defer func() { _ = s.Backend.Signal(syscall.SIGCONT) }()
			for i, n := range names {
				b := &Buyer{Name: n, Ambiguous: true, Outcome: OutIndeterminate}
				hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				if ref, err := s.API.Buy(hctx, tokens[n], s.Item, paths[i]); err == nil {
					b.Told, b.Ambiguous, b.Outcome = []string{ref}, false, OutAccepted
				}
				cancel()
				s.History.AddBuyer(b)
			}
			time.Sleep(500*time.Millisecond - 5*100*time.Millisecond)
			return nil
		},
		Recover: func(context.Context, *Stack) error { return nil },
		Probe:   func(_ context.Context, s *Stack) bool { return s.BackendHealthy() },
	}
}

// misconfRow: the AOF on a small tmpfs (appendfsync everysec: with always
// Redis exits on a failed AOF write), filled up for 4 s: Redis refuses
// writes with MISCONF until the write succeeds again.
func misconfRow() Row {
	filler := func(s *Stack) string { return filepath.Join(s.Redis.Dir, "filler") }
	return Row{Name: "redis-misconf", What: "Redis AOF disk full (tmpfs, everysec) for 4 s: writes refused with MISCONF",
		Options: func(Features) (StackOptions, string) {
			if os.Geteuid() != 0 {
				return StackOptions{}, "needs root to mount a tmpfs"
			}
			return StackOptions{Fsync: "everysec"}, ""
		},
		Prepare: func(ctx context.Context, _ *Servers, dir string, opt *StackOptions) (func(), error) {
			d := filepath.Join(dir, "redis-tmpfs")
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", d).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("mounting a tmpfs: %w: %s", err, out)
			}
			opt.RedisDir = d
			return func() { _ = exec.Command("umount", "-l", d).Run() }, nil
		},
		Inject: func(_ context.Context, s *Stack) error {
			f, err := os.Create(filler(s))
			if err != nil {
				return err
			}
			defer f.Close()
			chunk := make([]byte, 1<<20)
			for len(chunk) > 0 {
				if _, err := f.Write(chunk); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						return fmt.Errorf("filling the tmpfs: %w", err)
					}
					chunk = chunk[:len(chunk)/2]
				}
			}
			return nil
		},
		Hold:    4 * time.Second,
		Recover: func(_ context.Context, s *Stack) error { return os.Remove(filler(s)) },
		Probe:   func(ctx context.Context, s *Stack) bool { return s.Redis.Ping(ctx) },
	}
}

// everysecCrashRow simulates an OS crash under appendfsync everysec: the
// AOF is cut back to its size one second before a kill -9 (what the page
// cache held and the disk did not), then Redis starts from it.
func everysecCrashRow() Row {
	return Row{Name: "redis-everysec-crash", What: "appendfsync everysec; OS crash simulated: AOF cut back to its size 1 s before kill -9; restart",
		Kills: false, CrashLoss: true,
		Options: func(Features) (StackOptions, string) { return StackOptions{Fsync: "everysec"}, "" },
		Inject: func(ctx context.Context, s *Stack) error {
			aof, err := s.Redis.IncrAOF()
			if err != nil {
				return err
			}
			fi, err := os.Stat(aof)
			if err != nil {
				return err
			}
			time.Sleep(time.Second)
			s.Redis.Kill()
			return os.Truncate(aof, fi.Size())
		},
		Hold:    time.Second,
		Recover: func(ctx context.Context, s *Stack) error { return s.Redis.Start(ctx) },
		Probe:   func(ctx context.Context, s *Stack) bool { return s.Redis.Ping(ctx) },
	}
}
