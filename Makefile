.PHONY: test build vet fmt run up down stack

# Runs the tests against real Redis, PostgreSQL, ZooKeeper and RabbitMQ
# servers started (and stopped) by scripts/testenv.sh. ARGS: go test args.
test:
	scripts/testenv.sh $(ARGS)

build:
	go build -o bin/seckill ./cmd/seckill

vet:
	go vet ./...

fmt:
	gofmt -l -w .

# Runs the whole system in one process on embedded stand-ins (miniredis,
# SQLite, in-process queue) with a demo sale; needs nothing but Go. Ctrl-C stops it.
run:
	go run ./cmd/seckill dev $(ARGS)

# The real stack: Redis, RabbitMQ, PostgreSQL, ZooKeeper, then backend,
# worker and edge as separate processes (logs and pids in .seckill/).
up:
	scripts/stack.sh up

down:
	scripts/stack.sh down

# The real stack in the foreground; Ctrl-C stops everything.
stack:
	scripts/stack.sh run
