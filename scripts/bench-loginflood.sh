#!/usr/bin/env bash
# bench-loginflood.sh: purchases during a login flood (issue 13 M5), with the
# backend, the worker, the edge and the load generator in separate processes.
#
# Installs and starts the real servers (scripts/services.sh) in a temporary
# folder, builds bin/seckill, creates the database seckill, starts `seckill
# backend` (default password hashing: max(1, cores/2) threads at nice 19),
# `seckill worker`, `seckill edge` (limits configs/bench-limits.yaml: no
# per-IP login limit is reached; random admin token and session secret), all
# on 127.0.0.1 port 0; waits for a quiet machine; then runs
#
#   seckill bench loginflood   buys at 50/s: 10 s alone, 20 s beside 200
#                              logins/s, 10 s alone again; the buys' p99
#                              with the logins against without them
#
# prints its Markdown table, and stops everything it started, whatever
# happens (and checks that no process of it is left).
#
#   BENCH_FLOOD_ARGS  extra arguments of `bench loginflood` (e.g. "--control")
#   BENCH_BACKEND_ARGS extra arguments of `seckill backend` (e.g.
#                     "--hash-process=false": hashing in the backend at
#                     normal priority, as before issue 13 M5's fix)
#   BENCH_MAX_LOAD    wait for the 1-minute load average to drop to this
#                     before measuring (default 1.5; 0: do not wait)
#   BENCH_LOAD_WAIT   longest wait for it, in seconds (default 600); then the
#                     run goes ahead with a warning
#   BENCH_OUT         folder for loginflood.json and the table
#                     (default: printed only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"
BIN="$ROOT/bin/seckill"
DIR=""
PIDS=()  # every process this script started, stopped in reverse order
NAMES=()

log() { echo "bench-loginflood.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

stop_pid() { # pid name
	local pid=$1 name=$2
	alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then
		log "$name (pid $pid) ignored SIGTERM for 15 s, killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local i left=""
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" "${NAMES[i]}"
	done
	for ((i = 0; i < ${#PIDS[@]}; i++)); do
		if alive "${PIDS[i]}"; then left+=" ${NAMES[i]}(${PIDS[i]})"; fi
	done
	if [[ -n $DIR ]]; then
		if [[ $rc != 0 ]]; then
			for f in "$DIR"/*.log; do
				[[ -f $f ]] || continue
				echo "---- last lines of $f ----" >&2
				tail -n 20 "$f" >&2 || true
			done
		fi
		"$SERVICES" stop "$DIR" || { log "stopping the servers failed ($DIR kept)"; rc=1; DIR=""; }
	fi
	if [[ -n $DIR ]]; then
		# Nothing started from this folder may survive (servers included).
		local p rest=""
		for p in $(pgrep -f -- "$DIR" 2>/dev/null || true); do
			[[ $p == "$$" ]] || rest+=" $p"
		done
		[[ -z $rest ]] || left+=" (processes still naming $DIR:$rest)"
		[[ -n $left ]] || rm -rf "$DIR"
	fi
	if [[ -n $left ]]; then
		log "error: still running after the stop:$left"
		rc=1
	else
		log "everything this script started is stopped"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME ARGS...: run bin/seckill ARGS in the background, logging to DIR/NAME.log.
start() {
	local name=$1
	shift
	"$BIN" "$@" </dev/null >"$DIR/$name.log" 2>&1 &
	PIDS+=("$!")
	NAMES+=("$name")
}

# wait_file NAME FILE: wait until the process wrote its address file.
wait_file() {
	local name=$1 f=$2 pid=${PIDS[${#PIDS[@]} - 1]}
	for _ in $(seq 1 300); do
		[[ -s $f ]] && return 0
		alive "$pid" || die "$name exited (see $DIR/$name.log)"
		sleep 0.1
	done
	die "$name did not start listening within 30 s"
}

wait_ready() { # name url
	for _ in $(seq 1 300); do
		curl -fsS "$2" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "$1 did not become ready ($2)"
}

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

load1() { cut -d' ' -f1 /proc/loadavg; }

# wait_quiet: the figures mean little while other benchmarks run.
wait_quiet() {
	local max=${BENCH_MAX_LOAD:-1.5} limit=${BENCH_LOAD_WAIT:-600} waited=0
	[[ $max == 0 ]] && return 0
	while awk -v l="$(load1)" -v m="$max" 'BEGIN { exit !(l > m) }'; do
		if ((waited >= limit)); then
			log "warning: load average still $(load1) (> $max) after ${limit}s: measuring anyway"
			return 0
		fi
		log "load average $(load1) > $max: waiting 60 s ($waited s so far)"
		sleep 60
		waited=$((waited + 60))
	done
	log "load average $(load1) (<= $max): measuring"
}

"$SERVICES" install
command -v curl >/dev/null 2>&1 || die "curl is required"

(cd "$ROOT" && go build -o "$BIN" ./cmd/seckill)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/seckill-bench-loginflood.XXXXXX")
chmod 755 "$DIR"
"$SERVICES" start "$DIR"
# shellcheck disable=SC1091
source "$DIR/env"
pg_url=${SECKILL_TEST_PG%%/postgres\?*}/seckill?sslmode=disable
psql "$SECKILL_TEST_PG" -qc "create database seckill" >/dev/null

# Secrets through the environment (not visible in ps): every command reads them.
SECKILL_ADMIN_TOKEN=$(random_hex 16)
SECKILL_BACKEND_TOKEN=$(random_hex 32)
SECKILL_SESSION_SECRET=$(random_hex 32)
export SECKILL_ADMIN_TOKEN SECKILL_BACKEND_TOKEN SECKILL_SESSION_SECRET
export SECKILL_REDIS_URL=$SECKILL_TEST_REDIS SECKILL_AMQP_URL=$SECKILL_TEST_AMQP SECKILL_PG_URL=$pg_url
export SECKILL_LOG_LEVEL=${SECKILL_LOG_LEVEL:-warn}

# shellcheck disable=SC2086
start backend backend --listen 127.0.0.1:0 --addr-file "$DIR/backend.addr" ${BENCH_BACKEND_ARGS:-}
wait_file backend "$DIR/backend.addr"
BACKEND=http://$(cat "$DIR/backend.addr")
wait_ready backend "$BACKEND/readyz"
start worker worker
start edge edge --public-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --addr-file "$DIR/edge.addr" \
	--backend-url "$BACKEND" --limits "$ROOT/configs/bench-limits.yaml"
wait_file edge "$DIR/edge.addr"
read -r pub adm <"$DIR/edge.addr"
PUBLIC=http://${pub#public=}
ADMIN=http://${adm#admin=}
wait_ready edge "$ADMIN/readyz"
log "backend $BACKEND, edge $PUBLIC (admin $ADMIN); logs in $DIR"

OUT=${BENCH_OUT:-$DIR/out}
mkdir -p "$OUT"
wait_quiet
log "uptime before bench loginflood: $(uptime)"
# shellcheck disable=SC2086
"$BIN" bench loginflood --public "$PUBLIC" --admin "$ADMIN" --backend "$BACKEND" \
	--json "$OUT/loginflood.json" ${BENCH_FLOOD_ARGS:-} | tee "$OUT/loginflood.md"
log "uptime after: $(uptime)"
[[ -n ${BENCH_OUT:-} ]] && log "table and JSON in $OUT"
exit 0
