#!/usr/bin/env bash
# stack.sh: run the whole system on this machine from the real servers.
#
#   stack.sh up      install and start Redis, RabbitMQ, PostgreSQL and
#                    ZooKeeper (scripts/services.sh), then `seckill backend`
#                    and `seckill worker` as separate processes
#   stack.sh down    stop exactly what `up` started
#   stack.sh run     up, follow the logs until Ctrl-C, then down
#   stack.sh status  show what runs and where
#
# Everything lives in $SECKILL_STACK_DIR (default .seckill/ in the repo):
# server data, logs, pids, and `env` with the SECKILL_* settings to reuse,
# e.g. `source .seckill/env && bin/seckill reconcile`.
# The backend listens on $SECKILL_BACKEND_LISTEN (default 127.0.0.1:8090).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"
STACK="${SECKILL_STACK_DIR:-$ROOT/.seckill}"
BIN="$ROOT/bin/seckill"
LISTEN="${SECKILL_BACKEND_LISTEN:-127.0.0.1:8090}"

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
	cat >"$STACK/env" <<ENV
export SECKILL_REDIS_URL=$SECKILL_TEST_REDIS
export SECKILL_AMQP_URL=$SECKILL_TEST_AMQP
export SECKILL_PG_URL='$pg_url'
export SECKILL_ZK=$SECKILL_TEST_ZK
export SECKILL_BACKEND_LISTEN=$LISTEN
ENV
	start_proc backend backend --listen "$LISTEN"
	start_proc worker worker
	for _ in $(seq 1 100); do
		if curl -fsS "http://$LISTEN/readyz" >/dev/null 2>&1; then
			status
			return 0
		fi
		alive "$STACK/backend.pid" || { tail -20 "$STACK/backend.log" >&2; die "the backend exited"; }
		sleep 0.1
	done
	tail -20 "$STACK/backend.log" >&2
	die "the backend did not become ready"
}

down() {
	stop_proc backend
	stop_proc worker
	if [[ -f $STACK/servers/env ]]; then
		"$SERVICES" stop "$STACK/servers"
		rm -rf "$STACK/servers"
	fi
	echo "stack.sh: stopped"
}

status() {
	for p in backend worker; do
		if alive "$STACK/$p.pid"; then echo "$p: running (pid $(cat "$STACK/$p.pid"), log $STACK/$p.log)"; else echo "$p: stopped"; fi
	done
	[[ -f $STACK/env ]] && { echo "settings ($STACK/env):"; sed 's/^export /  /' "$STACK/env"; }
	echo "backend API: http://$LISTEN/v1/items  (docs/BACKEND_API.md)"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
run)
	trap 'echo; down' EXIT
	trap 'exit 0' INT TERM
	up
	echo "stack.sh: following the logs; Ctrl-C stops everything"
	tail -n +1 -F "$STACK/backend.log" "$STACK/worker.log" &
	wait $!
	;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
