#!/usr/bin/env bash
# stack.sh: run the whole system on this machine from the real servers.
#
#   stack.sh up      install and start Redis, RabbitMQ, PostgreSQL and
#                    ZooKeeper (scripts/services.sh), then `seckill backend`,
#                    `seckill worker` and `seckill edge` as separate processes
#   stack.sh down    stop exactly what `up` started
#   stack.sh run     up, follow the logs until Ctrl-C, then down
#   stack.sh status  show what runs and where
#
# Everything lives in $SECKILL_STACK_DIR (default .seckill/ in the repo):
# server data, logs, pids, and `env` with the SECKILL_* settings to reuse,
# e.g. `source .seckill/env && bin/seckill reconcile`.
# Redis runs with appendonly yes and appendfsync always unless REDIS_AOF says
# everysec or no (at the first `up`; later ones keep the setting).
# The edge serves the public API on 127.0.0.1:8080 and the admin API on
# 127.0.0.1:8081; the backend listens on $SECKILL_BACKEND_LISTEN (default
# 127.0.0.1:8090). The admin token is $SECKILL_ADMIN_TOKEN, or a random one
# kept in .seckill/env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"
STACK="${SECKILL_STACK_DIR:-$ROOT/.seckill}"
BIN="$ROOT/bin/seckill"
LISTEN="${SECKILL_BACKEND_LISTEN:-127.0.0.1:8090}"
PUBLIC="${SECKILL_PUBLIC_LISTEN:-127.0.0.1:8080}"
ADMIN="${SECKILL_ADMIN_LISTEN:-127.0.0.1:8081}"
METRICS="${SECKILL_WORKER_METRICS_LISTEN:-127.0.0.1:9091}"

die() { echo "stack.sh: error: $*" >&2; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_proc() { # name args...
	local name=$1
	shift
	if alive "$STACK/$name.pid"; then
		echo "stack.sh: $name already runs (pid $(cat "$STACK/$name.pid"))"
		return
	fi
	# shellcheck disable=SC1091
	(source "$STACK/env" && exec nohup "$BIN" "$@" </dev/null >>"$STACK/$name.log" 2>&1) &
	echo $! >"$STACK/$name.pid"
}

stop_proc() { # name
	local f="$STACK/$1.pid"
	if alive "$f"; then
		local pid
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

up() {
	mkdir -p "$STACK"
	chmod 755 "$STACK"
	"$SERVICES" install
	(cd "$ROOT" && go build -o "$BIN" ./cmd/seckill)
	if [[ ! -f $STACK/servers/env ]]; then
		mkdir -p "$STACK/servers"
		chmod 755 "$STACK/servers"
		"$SERVICES" start "$STACK/servers"
	fi
	# shellcheck disable=SC1091
	source "$STACK/servers/env"
	local pg_admin=$SECKILL_TEST_PG
	local pg_url=${pg_admin%%/postgres\?*}/seckill?sslmode=disable
	if ! psql "$pg_admin" -Atqc "select 1 from pg_database where datname='seckill'" | grep -q 1; then
		psql "$pg_admin" -qc "create database seckill" >/dev/null
	fi
	local token=${SECKILL_ADMIN_TOKEN:-} secret=""
	if [[ -f $STACK/env ]]; then
		# keep the token and secret across restarts: sessions stay valid
		[[ -n $token ]] || token=$(sed -n 's/^export SECKILL_ADMIN_TOKEN=//p' "$STACK/env")
		secret=$(sed -n 's/^export SECKILL_SESSION_SECRET=//p' "$STACK/env")
	fi
	[[ -n $token ]] || token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	[[ -n $secret ]] || secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	cat >"$STACK/env" <<ENV
export SECKILL_REDIS_URL=$SECKILL_TEST_REDIS
export SECKILL_AMQP_URL=$SECKILL_TEST_AMQP
export SECKILL_PG_URL='$pg_url'
export SECKILL_ZK=$SECKILL_TEST_ZK
export SECKILL_BACKEND_LISTEN=$LISTEN
export SECKILL_BACKEND_URL=http://$LISTEN
export SECKILL_PUBLIC_LISTEN=$PUBLIC
export SECKILL_ADMIN_LISTEN=$ADMIN
export SECKILL_WORKER_METRICS_LISTEN=$METRICS
export SECKILL_ADMIN_TOKEN=$token
export SECKILL_SESSION_SECRET=$secret
export SECKILL_LIMITS=$ROOT/configs/limits.yaml
ENV
	start_proc backend backend --config "$ROOT/configs/backend.yaml" --listen "$LISTEN"
	start_proc worker worker --config "$ROOT/configs/worker.yaml"
	wait_ready backend "http://$LISTEN/readyz"
	start_proc edge edge --config "$ROOT/configs/edge.yaml"
	wait_ready edge "http://$ADMIN/readyz"
	status
}

wait_ready() { # name url
	for _ in $(seq 1 150); do
		curl -fsS "$2" >/dev/null 2>&1 && return 0
		alive "$STACK/$1.pid" || { tail -20 "$STACK/$1.log" >&2; die "$1 exited"; }
		sleep 0.1
	done
	tail -20 "$STACK/$1.log" >&2
	die "$1 did not become ready"
}

down() {
	stop_proc edge
	stop_proc backend
	stop_proc worker
	if [[ -f $STACK/servers/env ]]; then
		"$SERVICES" stop "$STACK/servers"
		rm -rf "$STACK/servers"
	fi
	echo "stack.sh: stopped"
}

# pids prints the pid of every process up started (parts and servers).
pids() {
	for f in "$STACK"/*.pid; do [[ -f $f ]] && head -n1 "$f"; done
	find "$STACK/servers" -name '*.pid' -exec head -qn1 {} + 2>/dev/null || true
}

status() {
	for p in edge backend worker; do
		if alive "$STACK/$p.pid"; then echo "$p: running (pid $(cat "$STACK/$p.pid"), log $STACK/$p.log)"; else echo "$p: stopped"; fi
	done
	[[ -f $STACK/env ]] && { echo "settings ($STACK/env):"; sed -e 's/^export /  /' -e 's/\(SESSION_SECRET=\).*/\1****/' "$STACK/env"; }
	echo "storefront:  http://$PUBLIC/   public API: http://$PUBLIC/api/items (docs/API.md)"
	echo "admin API:   http://$ADMIN/admin/   dashboard: http://$ADMIN/dashboard/ (token: SECKILL_ADMIN_TOKEN in $STACK/env)"
	echo "backend API: http://$LISTEN/v1/items           (docs/BACKEND_API.md)"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
pids) pids ;;
run)
	trap 'echo; down' EXIT
	trap 'exit 0' INT TERM
	up
	echo "stack.sh: following the logs; Ctrl-C stops everything"
	tail -n +1 -F "$STACK/edge.log" "$STACK/backend.log" "$STACK/worker.log" &
	wait $!
	;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
