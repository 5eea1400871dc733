.PHONY: test lint build vet fmt run up down clean stack chaos chaos-ci chaos-list chaos-deps

# Runs the tests against real Redis, PostgreSQL, ZooKeeper and RabbitMQ
# servers started (and stopped) by scripts/testenv.sh. ARGS: go test args.
test:
	scripts/testenv.sh $(ARGS)

build:
	go build -ldflags "-X main.buildVersion=$$(git describe --always --dirty 2>/dev/null)" -o bin/seckill ./cmd/seckill

vet:
	go vet ./...

# go vet, a gofmt check and staticcheck (pinned, installed into bin/); all
# must be clean. .ci/run runs it before the tests.
STATICCHECK_VERSION = v0.8.2
lint: vet bin/staticcheck
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	bin/staticcheck ./...

bin/staticcheck:
	mkdir -p bin
	GOBIN=$(CURDIR)/bin.tmp go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv bin.tmp/staticcheck $@ && rmdir bin.tmp

fmt:
	gofmt -l -w .

# Runs the whole system in one process on embedded stand-ins (miniredis,
# SQLite, in-process queue) with a demo sale; needs nothing but Go. Ctrl-C
# stops it, and make exits 0 when seckill did (scripts/run.sh).
run:
	scripts/run.sh $(ARGS)

# The real stack: Redis, RabbitMQ, PostgreSQL, ZooKeeper, then backend,
# worker and edge as separate processes (logs and pids in .seckill/). Fails,
# naming the port and its holder, when a port is taken; run again, it
# restarts the three parts on the new build and says which pids it stops.
# Installs (apt-get, root) only the servers, and only those missing.
# LAB=1: the edge believes X-Forwarded-For from loopback (for `seckill lab`).
up:
	scripts/stack.sh up

# Keeps all data (orders included) for the next `make up`.
down:
	scripts/stack.sh down

# down, then deletes .seckill/ (server data, logs, token and secret) and says so.
clean:
	scripts/stack.sh clean

# The real stack in the foreground; Ctrl-C stops everything.
stack:
	scripts/stack.sh run

# The fault matrix (docs/RELIABILITY.md): the real stack as separate
# processes on private servers, one fault per sale, judged by its own
# checker. ROWS: comma-separated row names (default all; `make chaos-list`);
# RUNS: runs per row. Exits non-zero on any violation.
ROWS ?=
RUNS ?= 3
CHAOS_ARGS ?=
TOXIPROXY_VERSION := v2.5.0

bin/toxiproxy-server:
	mkdir -p bin
	GOBIN=$(CURDIR)/bin.tmp go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv bin.tmp/server $@ && rmdir bin.tmp

chaos-deps: build bin/toxiproxy-server

chaos: chaos-deps
	go run ./chaos/cmd/chaos -rows '$(ROWS)' -runs $(RUNS) $(CHAOS_ARGS)

chaos-list:
	go run ./chaos/cmd/chaos -list

# The CI subset: relay reply loss, Redis kill (AOF always), PostgreSQL stop,
# each 3 times (about 4 minutes on 2 cores).
CHAOS_CI_ROWS := relay-reply-loss,redis-kill,postgres-stop

chaos-ci: chaos-deps
	go run ./chaos/cmd/chaos -strict -rows '$(CHAOS_CI_ROWS)' -runs 3 $(CHAOS_ARGS)
