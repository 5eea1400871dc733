#!/usr/bin/env bash
# stack.sh: run the whole system on this machine from the real servers.
#
#   stack.sh up      install and start Redis, RabbitMQ, PostgreSQL and
#                    ZooKeeper (scripts/services.sh), then `seckill backend`,
#                    `seckill worker` and `seckill edge` as separate processes;
#                    fails (and starts no part) when a port it needs is taken,
#                    naming the port and who holds it. Run again while up, it
#                    rebuilds and restarts the three parts (it says which pids
#                    it stops); the servers and their data stay.
#   stack.sh down    stop exactly what `up` started; all data is kept
#   stack.sh clean   down, then delete $SECKILL_STACK_DIR: all server data
#                    (orders included), logs, settings (tokens, secret,
#                    server passwords)
#   stack.sh run     up, follow the logs until Ctrl-C, then down
#   stack.sh status  show what runs and where
#
# Everything lives in $SECKILL_STACK_DIR (default .seckill/ in the repo):
# server data, logs, pids, and `env` with the SECKILL_* settings to reuse,
# e.g. `source .seckill/env && bin/seckill reconcile`. Both it and
# servers/credentials are readable by their owner only: Redis, RabbitMQ and
# PostgreSQL each get their own user and generated password at the first
# `up` (scripts/services.sh), the URLs in `env` carry them, and `status`
# masks them (docs/SECURITY.md).
# Redis runs with appendonly yes and appendfsync always unless REDIS_AOF says
# everysec or no (at the first `up`; later ones keep the setting).
# The edge serves the public API on $SECKILL_PUBLIC_LISTEN (default
# 127.0.0.1:8080) and the admin API on $SECKILL_ADMIN_LISTEN (127.0.0.1:8081);
# the backend listens on $SECKILL_BACKEND_LISTEN (127.0.0.1:8090), the
# worker's metrics on $SECKILL_WORKER_METRICS_LISTEN (127.0.0.1:9091). The
# admin token is $SECKILL_ADMIN_TOKEN, or a random one kept in .seckill/env.
# LAB=1 makes the edge believe X-Forwarded-For from loopback (for the lab).
# A part counts as ready only when its own pid lives and /healthz on each of
# its ports names the instance it wrote to <part>.instance (docs/API.md,
# Health): an answer from another process on that port does not count.
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

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

PARTS=(edge backend worker)

start_proc() { # name args...
	local name=$1
	shift
	rm -f "$STACK/$name.instance"
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
	rm -f "$f" "$STACK/$1.instance"
}

stop_parts() {
	local p
	for p in "${PARTS[@]}"; do stop_proc "$p"; done
}

# holders PORT: who listens on that TCP port (ss -ltnp), or nothing.
holders() {
	ss -Hltnp "( sport = :$1 )" 2>/dev/null | awk '{ $1 = $2 = $3 = ""; sub(/^ +/, ""); print }'
}

# holder PORT: holders, or a word when ss sees nobody (any more).
holder() {
	local who
	who=$(holders "$1")
	echo "${who:-a process gone by now (ss -ltnp shows no listener)}"
}

# fail MESSAGE: stop the parts this up started, then die; the servers stay.
fail() {
	stop_parts
	die "$* (the servers still run; \`make down\` stops them)"
}

# check_free NAME VAR ADDR: fail, naming the port and its holder, when
# something already listens on the port of ADDR.
check_free() {
	local port=${3##*:} who
	who=$(holders "$port")
	[[ -z $who ]] || die "port $port ($2=$3, wanted by the $1) is already in use by: $who
  stop that process, or set $2 to a free address"
}

# instance_at URL: the instance the /healthz at URL names (empty if none).
instance_at() {
	curl -fsS --max-time 2 "$1" 2>/dev/null | sed -n 's/.*"instance":"\([0-9a-f]*\)".*/\1/p'
}

# wait_ready NAME READYZ ADDR...: wait until NAME's own process (its pid
# alive) answers /healthz with its own instance on every ADDR and READYZ
# says ready. Any other answer (a stranger on the port) does not count.
wait_ready() {
	local name=$1 readyz=$2 want a ok
	shift 2
	for _ in $(seq 1 300); do
		if ! alive "$STACK/$name.pid"; then
			tail -20 "$STACK/$name.log" >&2
			local port
			for a in "$@"; do
				port=${a##*:}
				if grep -q "listening on $a: .*address already in use" <(tail -20 "$STACK/$name.log"); then
					fail "$name exited: port $port ($a) is already in use by: $(holder "$port")"
				fi
			done
			fail "$name exited (log: $STACK/$name.log)"
		fi
		want=$(cat "$STACK/$name.instance" 2>/dev/null || true)
		if [[ -n $want ]]; then
			ok=1
			for a in "$@"; do
				[[ $(instance_at "http://$a/healthz") == "$want" ]] || { ok=0; break; }
			done
			if [[ $ok == 1 ]] && curl -fsS --max-time 2 "$readyz" >/dev/null 2>&1; then return 0; fi
		fi
		sleep 0.1
	done
	tail -20 "$STACK/$name.log" >&2
	for a in "$@"; do
		if [[ -n $want && $(instance_at "http://$a/healthz") != "$want" ]]; then
			fail "$name (pid $(cat "$STACK/$name.pid"), instance $want) is not the one answering on $a; port ${a##*:} is held by: $(holder "${a##*:}")"
		fi
	done
	fail "$name did not become ready in 30 s (log: $STACK/$name.log)"
}

up() {
	mkdir -p "$STACK"
	chmod 755 "$STACK"
	"$SERVICES" install servers # only the servers, only when missing
	if [[ ! -x $BIN ]]; then
		echo "stack.sh: building $BIN for the first time: downloading modules and compiling (1 to 3 minutes)..."
	fi
	(cd "$ROOT" && go build -ldflags "-X main.buildVersion=$(git describe --always --dirty 2>/dev/null)" -o "$BIN" ./cmd/seckill)
	local p running=""
	for p in "${PARTS[@]}"; do
		if alive "$STACK/$p.pid"; then running+="${running:+, }$p pid $(cat "$STACK/$p.pid")"; fi
	done
	if [[ -n $running ]]; then
		echo "stack.sh: already up ($running): stopping them to restart on the new build; the servers and their data stay"
		stop_parts
	fi
	# SECKILL_STACK_SKIP_PORT_CHECK=1 (for tests) leaves the taken port to
	# the readiness check below, which must catch it as well.
	if [[ ${SECKILL_STACK_SKIP_PORT_CHECK:-} != 1 ]]; then
		check_free edge SECKILL_PUBLIC_LISTEN "$PUBLIC"
		check_free edge SECKILL_ADMIN_LISTEN "$ADMIN"
		check_free backend SECKILL_BACKEND_LISTEN "$LISTEN"
		check_free worker SECKILL_WORKER_METRICS_LISTEN "$METRICS"
	fi
	if [[ ! -f $STACK/servers/env ]]; then
		mkdir -p "$STACK/servers"
		chmod 755 "$STACK/servers"
		if [[ ! -f $STACK/servers/credentials ]]; then
			# Each server its own user and password, made once: Redis
			# (ACL user), RabbitMQ (no guest), PostgreSQL (scram over TCP).
			(umask 077 && printf 'REDIS_PASSWORD=%s\nAMQP_PASSWORD=%s\nPG_PASSWORD=%s\n' \
				"$(random_hex 24)" "$(random_hex 24)" "$(random_hex 24)" >"$STACK/servers/credentials")
		fi
		"$SERVICES" start "$STACK/servers"
	fi
	# shellcheck disable=SC1091
	source "$STACK/servers/env"
	local pg_admin=$SECKILL_TEST_PG
	local pg_url=${pg_admin%%/postgres\?*}/seckill?sslmode=disable
	if ! psql "$pg_admin" -Atqc "select 1 from pg_database where datname='seckill'" | grep -q 1; then
		psql "$pg_admin" -qc "create database seckill" >/dev/null
	fi
	if [[ $(psql "$pg_admin" -Atqc "select pg_get_userbyid(datdba) from pg_database where datname='seckill'") == postgres ]]; then
		# Made by a stack.sh from before the credentials: hand the database
		# and its tables to the role seckill.
		"$SERVICES" admin-psql "$STACK/servers" -d seckill -qAt -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
ALTER DATABASE seckill OWNER TO seckill;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO seckill', r.tablename);
  END LOOP;
END $$;
SQL
	fi
	local token=${SECKILL_ADMIN_TOKEN:-} secret="" internal=${SECKILL_BACKEND_TOKEN:-}
	if [[ -f $STACK/env ]]; then
		# keep the tokens and secret across restarts: sessions stay valid
		[[ -n $token ]] || token=$(sed -n 's/^export SECKILL_ADMIN_TOKEN=//p' "$STACK/env")
		secret=$(sed -n 's/^export SECKILL_SESSION_SECRET=//p' "$STACK/env")
		[[ -n $internal ]] || internal=$(sed -n 's/^export SECKILL_BACKEND_TOKEN=//p' "$STACK/env")
	fi
	# 32 random bytes each (64 hex digits): the parts refuse shorter secrets.
	[[ -n $token ]] || token=$(random_hex 32)
	[[ -n $secret ]] || secret=$(random_hex 32)
	[[ -n $internal ]] || internal=$(random_hex 32)
	# ZooKeeper (docs/security-zookeeper.md): one credential per role and
	# the key that signs limits versions, kept across restarts.
	local zk_pusher="" zk_backend="" zk_edge="" role
	if [[ -f $STACK/env ]]; then
		zk_pusher=$(sed -n 's/^export SECKILL_ZK_PUSHER=//p' "$STACK/env")
		zk_backend=$(sed -n 's/^export SECKILL_ZK_BACKEND=//p' "$STACK/env")
		zk_edge=$(sed -n 's/^export SECKILL_ZK_EDGE=//p' "$STACK/env")
	fi
	for role in pusher backend edge; do
		local var=zk_$role
		[[ -n ${!var} ]] || printf -v "$var" '%s:%s' "$role" "$(random_hex 32)"
	done
	[[ -f $STACK/limits.key ]] || "$BIN" config keygen --out "$STACK/limits" >/dev/null
	(umask 077 && : >"$STACK/env.tmp")
	cat >"$STACK/env.tmp" <<ENV
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
export SECKILL_BACKEND_TOKEN=$internal
export SECKILL_LIMITS=$ROOT/configs/limits.yaml
export SECKILL_ZK_PUSHER=$zk_pusher
export SECKILL_ZK_BACKEND=$zk_backend
export SECKILL_ZK_EDGE=$zk_edge
export SECKILL_CONFIG_SIGNING_KEY=$STACK/limits.key
export SECKILL_CONFIG_PUBLIC_KEYS=$(cat "$STACK/limits.pub")
ENV
	# LAB=1 (make up LAB=1): the edge believes X-Forwarded-For from loopback,
	# as the lab needs to play many users from one machine.
	if [[ ${LAB:-} == 1 ]]; then
		echo "export SECKILL_TRUSTED_PROXIES=127.0.0.1/32,::1/128" >>"$STACK/env.tmp"
	fi
	mv "$STACK/env.tmp" "$STACK/env"
	# The tree and its ACLs before backends and edges register (idempotent).
	# shellcheck disable=SC1091
	(source "$STACK/env" && "$BIN" config init >/dev/null) || fail "seckill config init failed (ZooKeeper at $SECKILL_TEST_ZK)"
	start_proc backend backend --config "$ROOT/configs/backend.yaml" --listen "$LISTEN" --instance-file "$STACK/backend.instance"
	start_proc worker worker --config "$ROOT/configs/worker.yaml"
	wait_ready backend "http://$LISTEN/readyz" "$LISTEN"
	start_proc edge edge --config "$ROOT/configs/edge.yaml" --instance-file "$STACK/edge.instance"
	wait_ready edge "http://$ADMIN/readyz" "$PUBLIC" "$ADMIN"
	if ! alive "$STACK/worker.pid"; then
		tail -20 "$STACK/worker.log" >&2
		fail "worker exited (log: $STACK/worker.log)"
	fi
	status
}

down() {
	stop_parts
	if [[ -f $STACK/servers/env ]]; then
		"$SERVICES" stop "$STACK/servers"
	fi
	if [[ ${1:-} == quiet ]]; then
		return
	elif [[ -d $STACK/servers ]]; then
		echo "stack.sh: stopped; the data is kept in $STACK/servers (\`make clean\` deletes it)"
	else
		echo "stack.sh: stopped"
	fi
}

clean() {
	down quiet
	[[ -d $STACK ]] || { echo "stack.sh: nothing to delete ($STACK does not exist)"; return; }
	local real
	real=$(cd "$STACK" && pwd -P)
	[[ $real != / && $real != "$(cd "$ROOT" && pwd -P)" && $real != "$(cd ~ && pwd -P)" ]] ||
		die "refusing to delete $real"
	rm -rf "$real"
	echo "stack.sh: deleted $real: all server data (Redis, PostgreSQL with every order, RabbitMQ, ZooKeeper), the logs and the settings (admin token, session secret)"
}

# pids prints the pid of every process up started (parts and servers).
pids() {
	local f
	# awk ends every pid with a newline, also from a file that has none
	for f in "$STACK"/*.pid; do [[ -f $f ]] && awk 'FNR == 1 { print; exit }' "$f"; done
	find "$STACK/servers" -name '*.pid' -exec awk 'FNR == 1 { print }' {} + 2>/dev/null || true
}

status() {
	for p in "${PARTS[@]}"; do
		if alive "$STACK/$p.pid"; then echo "$p: running (pid $(cat "$STACK/$p.pid"), log $STACK/$p.log)"; else echo "$p: stopped"; fi
	done
	[[ -f $STACK/env ]] && { echo "settings ($STACK/env):"; sed -e 's/^export /  /' -e 's/\(SECRET=\|TOKEN=\|PASSWORD=\).*/\1****/' -e 's|\(://[^:/@]*:\)[^@]*@|\1****@|' "$STACK/env"; }
	echo "storefront:  http://$PUBLIC/   public API: http://$PUBLIC/api/items (docs/API.md)"
	echo "admin API:   http://$ADMIN/admin/   dashboard: http://$ADMIN/dashboard/ (token: SECKILL_ADMIN_TOKEN in $STACK/env)"
	echo "backend API: http://$LISTEN/v1/items           (docs/BACKEND_API.md)"
	if grep -q '^export SECKILL_TRUSTED_PROXIES=' "$STACK/env" 2>/dev/null; then
		echo "lab mode:    the edge believes X-Forwarded-For from loopback (LAB=1): seckill lab run configs/lab/small.yaml"
	else
		echo "lab:         the edge ignores X-Forwarded-For; for \`seckill lab\` start with \`make up LAB=1\`"
	fi
}

case "${1:-}" in
up) up ;;
down) down ;;
clean) clean ;;
status) status ;;
pids) pids ;;
run)
	TAIL=""
	# The tail runs in the background, where a non-interactive shell
	# ignores SIGINT for it: kill it ourselves, then stop the stack.
	trap 'echo; [[ -z $TAIL ]] || kill "$TAIL" 2>/dev/null || true; down' EXIT
	trap 'exit 0' INT TERM
	up
	echo "stack.sh: following the logs; Ctrl-C stops everything"
	tail -n +1 -F "$STACK/edge.log" "$STACK/backend.log" "$STACK/worker.log" &
	TAIL=$!
	wait "$TAIL"
	;;
*) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 2 ;;
esac
