.PHONY: test build vet fmt run up down

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

# Runs the system: the real servers, then the backend and worker; Ctrl-C stops all.
run:
	scripts/stack.sh run

up:
	scripts/stack.sh up

down:
	scripts/stack.sh down
