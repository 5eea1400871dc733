#!/usr/bin/env bash
# services.sh: install, start and stop the real servers the tests use
# (Redis, PostgreSQL 15, ZooKeeper, RabbitMQ), on loopback, on free private
# ports, with all data under one folder. No systemd, no Docker: every server
# is started by this script and stopped by the pids it recorded.
#
#   services.sh install [servers]       apt-get install what is missing (root):
#                                        the servers and what the tests use, or
#                                        with "servers" only the four servers
#   services.sh start DIR               start all four, write DIR/env
#   services.sh stop DIR                stop exactly what `start DIR` started
#                                        (data stays: a later `start DIR`
#                                        restarts on it, same ports)
#   services.sh admin-psql DIR ARGS...  psql as the administrator (postgres),
#                                        over the socket of `start DIR`
#   services.sh rabbitmq-start DIR      one private broker, writes DIR/amqp_url
#   services.sh rabbitmq-stop DIR       (a restart with the same DIR keeps the
#                                        ports, node name and durable data)
#   services.sh redis-start DIR         one private Redis, writes DIR/redis_url
#   services.sh redis-stop DIR          (REDIS_AOF=always (default): AOF with
#                                        fsync before every reply; everysec;
#                                        no: no persistence at all)
#   services.sh zookeeper-start DIR     one private ZooKeeper, writes DIR/zk_addr
#   services.sh zookeeper-stop DIR      (a restart with the same DIR keeps the
#                                        port and the data)
#
# With DIR/credentials (mode 0600, written by scripts/stack.sh before the first
# `start DIR`: REDIS_PASSWORD=, AMQP_PASSWORD=, PG_PASSWORD=, generated), the
# servers require them: Redis an ACL user `seckill` (the default user off),
# RabbitMQ a user `seckill` (guest deleted), PostgreSQL the role `seckill`
# with a password over TCP (scram-sha-256; the socket, in a folder only the
# postgres user can enter, stays the administrator's way in). DIR/env then
# holds URLs with those credentials (mode 0600). Without the file (the tests'
# servers, scripts/testenv.sh), nothing asks for a credential.
#
# Each RabbitMQ broker runs with its own epmd on a private port (ERL_EPMD_PORT),
# started and stopped by this script, so it never depends on nor disturbs an
# epmd or broker of anybody else.
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
PG_BIN=/usr/lib/postgresql/15/bin
JAVA_DIR=/usr/share/java
RMQ_SBIN=/usr/lib/rabbitmq/bin
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

VERBOSE=0
log() { if [[ $VERBOSE == 1 ]]; then echo "services.sh: $*" >&2; fi; }
die() { echo "services.sh: error: $*" >&2; exit 1; }

is_root() { [[ $(id -u) == 0 ]]; }

# Run a command as a service user (root only), else as ourselves. setpriv
# execs (no extra process), so a background pid is the command's own pid.
as_user() {
	local user=$1
	shift
	if is_root; then
		setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
	else
		"$@"
	fi
}

abs_dir() { (cd "$1" && pwd -P); }

tail_log() {
	local f
	for f in "$@"; do
		if [[ -f $f ]]; then
			echo "---- last lines of $f ----" >&2
			tail -n 40 "$f" >&2 || true
		fi
	done
}

# A zombie (exited, not yet reaped by its parent) counts as gone.
pid_alive() {
	[[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
	local st
	st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 0
	[[ $st != Z ]]
}

# pid_is PID PATTERN: the process exists and its command line holds PATTERN
# (guards against a recycled pid).
pid_is() {
	pid_alive "$1" || return 1
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$2"* ]]
}

# pid_env_has PID STRING: the process's environment holds STRING (root, or
# same user); true when the environment cannot be read.
pid_env_has() {
	[[ -r /proc/$1/environ ]] || return 0
	tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF -- "$2"
}

read_pid() { if [[ -s $1 ]]; then head -n 1 "$1" | tr -dc '0-9'; fi; }

# wait_gone PID SECONDS
wait_gone() {
	local pid=$1 n=$(($2 * 10))
	while pid_alive "$pid"; do
		((n-- > 0)) || return 1
		sleep 0.1
	done
}

# stop_pid PID PATTERN NAME: TERM, wait, then KILL.
stop_pid() {
	local pid=$1 pat=$2 name=$3
	pid_is "$pid" "$pat" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" 30; then
		echo "services.sh: $name (pid $pid) ignored SIGTERM for 30 s, killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "$name (pid $pid) would not die"
	fi
}

# ---------------------------------------------------------------- ports

RESERVED_PORTS=" "

port_busy() {
	local p=$1
	[[ $RESERVED_PORTS == *" $p "* ]] && return 0
	if command -v ss >/dev/null 2>&1; then
		# any TCP socket (listening or not) bound to that local port
		[[ -n $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] && return 0
	fi
	# something answers on loopback
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 0
	return 1
}

# A free loopback port below the kernel's ephemeral range (so that outgoing
# connections cannot take it between now and the server's bind).
pick_port() {
	local lo=20000 hi=32000 p i eph_lo
	if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
		read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
		if ((eph_lo > 21000 && eph_lo - 1 < hi)); then hi=$((eph_lo - 1)); fi
	fi
	for ((i = 0; i < 500; i++)); do
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
		if ! port_busy "$p"; then
			RESERVED_PORTS+="$p "
			echo "$p"
			return 0
		fi
	done
	die "no free TCP port found in $lo-$hi"
}

# ----------------------------------------------------------- folders

# The service users (postgres, rabbitmq) must be able to reach DIR: add the
# search (x) bit to parents that lack it for "other" (mktemp -d and Go's
# t.TempDir make 0700 folders). Only the x bit, never read.
make_reachable() {
	local d=$1
	is_root || return 0
	chmod 755 "$d"
	local p
	p=$(dirname "$d")
	while [[ $p != / ]]; do
		if [[ $(stat -c %A "$p") != ?????????[xt] ]]; then
			chmod o+x "$p" || die "cannot make $p traversable for the service users"
		fi
		p=$(dirname "$p")
	done
}

prepare_dir() {
	[[ -n ${1:-} ]] || die "missing DIR argument"
	mkdir -p "$1"
	local d
	d=$(abs_dir "$1")
	make_reachable "$d"
	echo "$d"
}

# ----------------------------------------------------------- install

# cmd_install [servers]: with "servers" (what `make up` needs) only the four
# servers and their tools; without, also what the tests use (tesseract for
# the captcha OCR measure, chromium for the browser tests, docker-compose for
# the compose check). Only what is missing; root only then.
cmd_install() {
	local missing=() norec=() only=${1:-}
	command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
	[[ -x $RMQ_SBIN/rabbitmq-server ]] || missing+=(rabbitmq-server)
	[[ -f $JAVA_DIR/zookeeper.jar ]] || missing+=(zookeeper)
	[[ -x $PG_BIN/postgres && -x $PG_BIN/initdb ]] || missing+=(postgresql-15)
	command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
	command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
	command -v epmd >/dev/null 2>&1 || missing+=(erlang-base)
	if [[ $only != servers ]]; then
		command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr) # captcha OCR measurement
		[[ -x /usr/bin/chromium ]] || missing+=(chromium)                 # e2e browser tests (chromedp)
		# deploy/ tests: `docker-compose config` validates docker-compose.yml without
		# an engine, so not its recommended docker.io (engine, containerd, iptables).
		command -v docker-compose >/dev/null 2>&1 || norec+=(docker-compose)
	fi
	if ((${#missing[@]} + ${#norec[@]} == 0)); then
		if [[ $only != servers ]]; then
			echo "services.sh: redis-server, rabbitmq-server, zookeeper, postgresql-15, docker-compose and chromium are installed"
		fi
		return 0
	fi
	if ! is_root; then
		die "missing packages: ${missing[*]} ${norec[*]} (run 'sudo $SELF install' or install them with apt-get)"
	fi
	echo "services.sh: installing ${missing[*]} ${norec[*]}"
	apt-get update
	# The packages' post-install scripts try to start system services and are
	# refused (no init system here); that is harmless: we start them ourselves.
	if ((${#missing[@]} > 0)); then
		DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
	fi
	if ((${#norec[@]} > 0)); then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${norec[@]}"
	fi
	[[ -x $RMQ_SBIN/rabbitmq-server && -f $JAVA_DIR/zookeeper.jar && -x $PG_BIN/postgres ]] &&
		command -v redis-server >/dev/null 2>&1 ||
		die "install finished but a server is still missing"
}

# ------------------------------------------------------------- Redis

redis_start() {
	local d port pid aof
	d=$(prepare_dir "$1")
	pid=$(read_pid "$d/redis.pid")
	if [[ -f $d/port ]]; then port=$(<"$d/port"); fi
	if [[ -n ${port:-} ]] && pid_is "$pid" ":$port"; then
		die "a Redis started in $d is already running (pid $pid)"
	fi
	if [[ -z ${port:-} ]]; then
		port=$(pick_port)
		echo "$port" >"$d/port"
	fi
	RESERVED_PORTS+="$port "
	# REDIS_AOF: always (default), everysec or no; 1 and 0 are always and
	# no. A restart with the same DIR keeps the setting it started with.
	aof=${REDIS_AOF:-$(cat "$d/aof" 2>/dev/null || echo always)}
	case $aof in
	1 | yes | always) aof=always ;;
	everysec) ;;
	0 | no | off) aof=no ;;
	*) die "REDIS_AOF must be always, everysec or no (got '$aof')" ;;
	esac
	echo "$aof" >"$d/aof"
	local args=(--port "$port" --bind 127.0.0.1 --save '' --daemonize yes
		--dir "$d" --logfile "$d/redis.log" --pidfile "$d/redis.pid")
	local userinfo=""
	if [[ -n ${REDIS_PASSWORD:-} ]]; then
		# An ACL file (not the command line, which ps shows): the default
		# user is off, seckill may use every key and channel and every
		# command but the administrative ones (CONFIG, SHUTDOWN, ACL, ...).
		(umask 077 && printf 'user default off\nuser seckill on >%s ~* &* +@all -@admin\n' "$REDIS_PASSWORD" >"$d/users.acl")
		args+=(--aclfile "$d/users.acl")
		userinfo="seckill:$REDIS_PASSWORD@"
	fi
	if [[ $aof == no ]]; then
		args+=(--appendonly no)
	else
		args+=(--appendonly yes --appendfsync "$aof")
	fi
	rm -f "$d/redis.pid" "$d/redis_url"
	(cd "$d" && redis-server "${args[@]}" </dev/null >>"$d/redis.log" 2>&1) ||
		{ tail_log "$d/redis.log"; die "redis-server failed to start (port $port)"; }
	local i
	for ((i = 0; i < 300; i++)); do
		# PONG, or NOAUTH when only the ACL user may talk: either way it serves.
		local pong
		pong=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>&1 || true)
		if [[ $pong == PONG || $pong == *NOAUTH* ]] && [[ -s $d/redis.pid ]]; then
			(umask 077 && echo "redis://${userinfo}127.0.0.1:$port/0" >"$d/redis_url")
			log "Redis ready on 127.0.0.1:$port (pid $(read_pid "$d/redis.pid"))"
			return 0
		fi
		sleep 0.1
	done
	tail_log "$d/redis.log"
	die "Redis did not answer PING on 127.0.0.1:$port within 30 s"
}

redis_stop() {
	local d=$1 pid port
	[[ -d $d ]] || return 0
	pid=$(read_pid "$d/redis.pid")
	port=$(cat "$d/port" 2>/dev/null || true)
	if [[ -n $pid && -n $port ]]; then
		# Redis treats SIGTERM as SHUTDOWN (the AOF is flushed first).
		stop_pid "$pid" ":$port" redis-server
	fi
	rm -f "$d/redis.pid" "$d/redis_url"
}

# -------------------------------------------------------- PostgreSQL

pg_start() {
	local d=$1 port
	mkdir -p "$d/pg"
	if is_root; then chown postgres:postgres "$d/pg"; fi
	if [[ -f $d/pg/data/PG_VERSION && -s $d/pg/port ]]; then
		# a restart with the same DIR keeps the port and the data
		port=$(<"$d/pg/port")
		RESERVED_PORTS+="$port "
	else
		port=$(pick_port)
		(cd "$d/pg" && as_user postgres "$PG_BIN/initdb" -D "$d/pg/data" -U postgres \
			--auth=trust -E UTF8 --locale=C.UTF-8 >"$d/pg/initdb.log" 2>&1) ||
			{ tail_log "$d/pg/initdb.log"; die "initdb failed"; }
	fi
	echo "$port" >"$d/pg/port"
	if [[ -n ${PG_PASSWORD:-} ]]; then
		# Password over TCP; the socket (its folder only the postgres user
		# and root can enter) stays open to the administrator.
		printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 scram-sha-256" \
			"host all all ::1/128 scram-sha-256" >"$d/pg/data/pg_hba.conf"
		if is_root; then chown postgres:postgres "$d/pg/data/pg_hba.conf"; fi
		chmod 700 "$d/pg"
	fi
	if ! (cd "$d/pg" && as_user postgres "$PG_BIN/pg_ctl" -D "$d/pg/data" -w -t 60 \
		-l "$d/pg/log" -o "-p $port -k $d/pg -c listen_addresses=127.0.0.1 -c max_connections=300" \
		start </dev/null >"$d/pg/pg_ctl.log" 2>&1); then
		tail_log "$d/pg/pg_ctl.log" "$d/pg/log"
		die "PostgreSQL did not start on 127.0.0.1:$port"
	fi
	head -n 1 "$d/pg/data/postmaster.pid" >"$d/pg/postgres.pid"
	local i
	for ((i = 0; i < 300; i++)); do
		if as_user postgres "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres 2>/dev/null; then
			log "PostgreSQL ready on 127.0.0.1:$port (pid $(read_pid "$d/pg/postgres.pid"))"
			if [[ -n ${PG_PASSWORD:-} ]]; then pg_role "$d" "$port"; fi
			return 0
		fi
		sleep 0.1
	done
	tail_log "$d/pg/log"
	die "PostgreSQL is not accepting connections on 127.0.0.1:$port after 30 s"
}

# pg_role DIR PORT: the login role seckill (may create databases, no
# superuser) with PG_PASSWORD, over the socket; the password goes on stdin.
pg_role() {
	local d=$1 port=$2
	[[ $PG_PASSWORD =~ ^[A-Za-z0-9]+$ ]] || die "PG_PASSWORD must be letters and digits"
	local sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'seckill') THEN
    CREATE ROLE seckill LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE seckill LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;"
	printf '%s\n' "$sql" | (cd "$d/pg" && as_user postgres "$PG_BIN/psql" -h "$d/pg" -p "$port" -U postgres \
		-d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null 2>>"$d/pg/log") ||
		{ tail_log "$d/pg/log"; die "creating the PostgreSQL role seckill failed"; }
}

pg_stop() {
	local d=$1 pid
	[[ -d $d/pg/data ]] || return 0
	pid=$(read_pid "$d/pg/postgres.pid")
	if [[ -f $d/pg/data/postmaster.pid ]]; then
		(cd "$d/pg" && as_user postgres "$PG_BIN/pg_ctl" -D "$d/pg/data" -m fast -w -t 60 stop \
			</dev/null >>"$d/pg/pg_ctl.log" 2>&1) || true
	fi
	if [[ -n $pid ]]; then stop_pid "$pid" "$d/pg/data" postgres; fi
	rm -f "$d/pg/postgres.pid"
}

# --------------------------------------------------------- ZooKeeper

zk_ruok() {
	local r
	r=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf ruok >&3 && cat <&3' _ "$1" 2>/dev/null) || true
	[[ $r == imok ]]
}

# zk_start DIR: a ZooKeeper with its files under DIR/zk. A restart with the
# same DIR keeps the port (DIR/zk/port) and the data (DIR/zk/data).
zk_start() {
	local d=$1 port="" pid
	if [[ -s $d/zk/port ]]; then port=$(<"$d/zk/port"); fi
	pid=$(read_pid "$d/zk/zk.pid")
	if [[ -n $pid ]] && pid_is "$pid" "$d/zk/zoo.cfg"; then
		die "a ZooKeeper started in $d is already running (pid $pid)"
	fi
	if [[ -z $port ]]; then
		port=$(pick_port)
	else
		RESERVED_PORTS+="$port "
	fi
	mkdir -p "$d/zk/data"
	cat >"$d/zk/zoo.cfg" <<EOF
tickTime=2000
dataDir=$d/zk/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
maxClientCnxns=0
EOF
	echo "$port" >"$d/zk/port"
	local J=$JAVA_DIR cp jar
	cp="$J/zookeeper.jar"
	for jar in zookeeper-jute slf4j-api slf4j-simple netty-all netty-handler netty-common \
		netty-transport netty-buffer netty-codec netty-resolver netty-transport-native-epoll \
		netty-transport-native-unix-common; do
		cp+=":$J/$jar.jar"
	done
	(cd "$d/zk" && exec setsid java -Xmx256m -cp "$cp" -Dzookeeper.admin.enableServer=false \
		-Dzookeeper.jmx.log4j.disable=true \
		org.apache.zookeeper.server.ZooKeeperServerMain "$d/zk/zoo.cfg" \
		</dev/null >"$d/zk/zk.log" 2>&1) &
	pid=$!
	echo "$pid" >"$d/zk/zk.pid"
	local i
	for ((i = 0; i < 600; i++)); do
		if zk_ruok "$port"; then
			log "ZooKeeper ready on 127.0.0.1:$port (pid $pid)"
			return 0
		fi
		pid_alive "$pid" || { tail_log "$d/zk/zk.log"; die "ZooKeeper exited during start"; }
		sleep 0.1
	done
	tail_log "$d/zk/zk.log"
	die "ZooKeeper did not answer ruok on 127.0.0.1:$port within 60 s"
}

zk_stop() {
	local d=$1 pid
	pid=$(read_pid "$d/zk/zk.pid")
	if [[ -n $pid ]]; then stop_pid "$pid" "$d/zk/zoo.cfg" zookeeper; fi
	rm -f "$d/zk/zk.pid"
}

# One private ZooKeeper (tests that stop and restart it): writes DIR/zk_addr.
zookeeper_start() {
	local d
	d=$(prepare_dir "$1")
	rm -f "$d/zk_addr"
	zk_start "$d"
	echo "127.0.0.1:$(<"$d/zk/port")" >"$d/zk_addr"
}

zookeeper_stop() {
	local d=$1
	zk_stop "$d"
	rm -f "$d/zk_addr"
}

# ---------------------------------------------------------- RabbitMQ

# Loads (or, the first time, chooses and saves) the broker's ports and node
# name: DIR/port (AMQP), DIR/rabbitmq.vars (dist port, epmd port, node).
rmq_vars() {
	local d=$1
	if [[ -s $d/port && -s $d/rabbitmq.vars ]]; then
		RMQ_PORT=$(<"$d/port")
		# shellcheck disable=SC1091
		source "$d/rabbitmq.vars"
		RESERVED_PORTS+="$RMQ_PORT $RMQ_DIST_PORT $RMQ_EPMD_PORT "
	else
		RMQ_PORT=$(pick_port)
		RMQ_DIST_PORT=$(pick_port)
		RMQ_EPMD_PORT=$(pick_port)
		RMQ_NODE="seckill$RMQ_PORT-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')@localhost"
		printf 'RMQ_DIST_PORT=%s\nRMQ_EPMD_PORT=%s\nRMQ_NODE=%s\n' \
			"$RMQ_DIST_PORT" "$RMQ_EPMD_PORT" "$RMQ_NODE" >"$d/rabbitmq.vars"
		echo "$RMQ_PORT" >"$d/port"
	fi
}

# The environment of every RabbitMQ process (server and CLI): nothing from the
# caller leaks in (env -i), HOME holds the node's own Erlang cookie.
rmq_env() {
	local d=$1
	RMQ_ENV=(env -i "PATH=$CLEAN_PATH" "HOME=$d" "LANG=C.UTF-8" "LC_ALL=C.UTF-8"
		"ERL_EPMD_PORT=$RMQ_EPMD_PORT" "ERL_EPMD_ADDRESS=127.0.0.1"
		"RABBITMQ_NODENAME=$RMQ_NODE" "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
		"RABBITMQ_NODE_PORT=$RMQ_PORT" "RABBITMQ_DIST_PORT=$RMQ_DIST_PORT"
		"RABBITMQ_MNESIA_BASE=$d/mnesia" "RABBITMQ_LOG_BASE=$d/log"
		"RABBITMQ_CONFIG_FILE=$d/rabbitmq" "RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config"
		"RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf"
		"RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins"
		"RABBITMQ_PID_FILE=$d/beam.pid")
}

rmqctl() {
	local d=$1
	shift
	rmq_env "$d"
	(cd "$d" && as_user rabbitmq "${RMQ_ENV[@]}" "$RMQ_SBIN/rabbitmqctl" -n "$RMQ_NODE" "$@")
}

rmq_start() {
	local d
	d=$(prepare_dir "$1")
	rmq_vars "$d"
	local spid
	spid=$(read_pid "$d/server.pid")
	if rmq_server_is "$spid" || rmq_beam_is "$(read_pid "$d/beam.pid")"; then
		die "a RabbitMQ broker started in $d is already running"
	fi
	# A broker killed with SIGKILL may have left its epmd behind.
	stop_pid "$(read_pid "$d/epmd.pid")" "epmd -port $RMQ_EPMD_PORT" epmd
	mkdir -p "$d/mnesia" "$d/log"
	[[ -f $d/enabled_plugins ]] || echo '[].' >"$d/enabled_plugins"
	: >"$d/rabbitmq-env.conf"
	cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
loopback_users.guest = true
EOF
	if [[ ! -s $d/.erlang.cookie ]]; then
		head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$d/.erlang.cookie"
	fi
	chmod 400 "$d/.erlang.cookie"
	rm -f "$d/amqp_url" "$d/beam.pid"
	if is_root; then chown -R rabbitmq:rabbitmq "$d"; fi

	# A private epmd for this broker (killed by rmq_stop).
	(cd "$d" && exec setsid epmd -port "$RMQ_EPMD_PORT" -address 127.0.0.1 \
		</dev/null >>"$d/log/epmd.log" 2>&1) &
	echo $! >"$d/epmd.pid"
	local i
	for ((i = 0; i < 100; i++)); do
		epmd -port "$RMQ_EPMD_PORT" -names >/dev/null 2>&1 && break
		pid_alive "$(read_pid "$d/epmd.pid")" || { tail_log "$d/log/epmd.log"; die "epmd exited on port $RMQ_EPMD_PORT"; }
		sleep 0.1
	done

	rmq_env "$d"
	# cwd = DIR: the VM writes erl_crash.dump in its working folder.
	local runas=()
	if is_root; then runas=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups --); fi
	(cd "$d" && exec setsid "${runas[@]}" "${RMQ_ENV[@]}" "$RMQ_SBIN/rabbitmq-server" \
		</dev/null >>"$d/log/server.out" 2>&1) &
	spid=$!
	echo "$spid" >"$d/server.pid"

	# await_startup fails at once while the node is not yet registered with
	# epmd: retry for up to 90 s.
	local deadline=$((SECONDS + 90)) out=""
	while :; do
		if out=$(rmqctl "$d" await_startup --timeout 30 2>&1); then
			break
		fi
		if ! pid_alive "$spid"; then
			echo "$out" >&2
			tail_log "$d/log/server.out" "$d/log/$RMQ_NODE.log"
			rmq_stop "$d" || true
			die "RabbitMQ exited during start (node $RMQ_NODE, port $RMQ_PORT)"
		fi
		if ((SECONDS >= deadline)); then
			echo "$out" >&2
			tail_log "$d/log/server.out" "$d/log/$RMQ_NODE.log"
			rmq_stop "$d" || true
			die "RabbitMQ did not start within 90 s (node $RMQ_NODE, port $RMQ_PORT)"
		fi
		sleep 1
	done
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null && break
		sleep 0.1
	done
	if [[ -n ${AMQP_PASSWORD:-} ]]; then
		# The user seckill (password on stdin, not the command line), all
		# rights on the default vhost; guest deleted.
		local verb=add_user
		if rmqctl "$d" list_users --silent 2>/dev/null | grep -q '^seckill[[:space:]]'; then verb=change_password; fi
		printf '%s' "$AMQP_PASSWORD" | rmqctl "$d" "$verb" seckill >>"$d/log/users.out" 2>&1 ||
			die "RabbitMQ: $verb seckill failed (log $d/log/users.out)"
		rmqctl "$d" set_permissions -p / seckill '.*' '.*' '.*' >>"$d/log/users.out" 2>&1 ||
			die "RabbitMQ: set_permissions seckill failed"
		if rmqctl "$d" list_users --silent 2>/dev/null | grep -q '^guest[[:space:]]'; then
			rmqctl "$d" delete_user guest >>"$d/log/users.out" 2>&1 || die "RabbitMQ: delete_user guest failed"
		fi
		(umask 077 && echo "amqp://seckill:$AMQP_PASSWORD@127.0.0.1:$RMQ_PORT/" >"$d/amqp_url")
	else
		echo "amqp://guest:guest@127.0.0.1:$RMQ_PORT/" >"$d/amqp_url"
	fi
	log "RabbitMQ ready on 127.0.0.1:$RMQ_PORT (node $RMQ_NODE, pid $spid)"
}

# The broker's processes, recognised by command and by the node name in their
# environment (so a recycled pid is never taken for ours).
rmq_server_is() { pid_is "$1" rabbitmq-server && pid_env_has "$1" "RABBITMQ_NODENAME=$RMQ_NODE"; }
rmq_beam_is() { pid_is "$1" beam.smp && pid_env_has "$1" "RABBITMQ_NODENAME=$RMQ_NODE"; }

rmq_stop() {
	local d=$1
	[[ -s $d/rabbitmq.vars && -s $d/port ]] || return 0
	rmq_vars "$d"
	local spid bpid epid
	spid=$(read_pid "$d/server.pid")
	bpid=$(read_pid "$d/beam.pid")
	epid=$(read_pid "$d/epmd.pid")
	if rmq_server_is "$spid" || rmq_beam_is "$bpid"; then
		rmqctl "$d" stop >>"$d/log/stop.out" 2>&1 || true
		[[ -z $bpid ]] || wait_gone "$bpid" 30 || true
		[[ -z $spid ]] || wait_gone "$spid" 10 || true
	fi
	# Whatever is left (rabbitmqctl stop failed): TERM, then KILL.
	if rmq_server_is "$spid"; then stop_pid "$spid" rabbitmq-server rabbitmq-server; fi
	if rmq_beam_is "$bpid"; then stop_pid "$bpid" beam.smp "rabbitmq beam"; fi
	[[ -z $epid ]] || stop_pid "$epid" "epmd -port $RMQ_EPMD_PORT" epmd
	rm -f "$d/server.pid" "$d/beam.pid" "$d/epmd.pid" "$d/amqp_url"
}

# ------------------------------------------------------- start / stop

cmd_start() {
	local d
	d=$(prepare_dir "$1")
	if [[ -f $d/env ]]; then die "$d/env exists: stop that run first (services.sh stop $d)"; fi
	command -v redis-server >/dev/null 2>&1 && [[ -x $PG_BIN/postgres && -f $JAVA_DIR/zookeeper.jar && -x $RMQ_SBIN/rabbitmq-server ]] ||
		die "servers missing: run 'services.sh install' first"
	local pg_user=postgres
	if [[ -f $d/credentials ]]; then
		# shellcheck disable=SC1091
		source "$d/credentials"
		export REDIS_PASSWORD AMQP_PASSWORD PG_PASSWORD
		pg_user="seckill:$PG_PASSWORD"
	fi
	# On any failure stop what was already started.
	trap 'echo "services.sh: start failed, stopping what was started" >&2; cmd_stop "'"$d"'" || true' EXIT
	redis_start "$d/redis"
	pg_start "$d"
	zk_start "$d"
	rmq_start "$d/rabbitmq"
	trap - EXIT
	local pg_port zk_port
	pg_port=$(<"$d/pg/port")
	zk_port=$(<"$d/zk/port")
	(umask 077 && : >"$d/env")
	cat >"$d/env" <<EOF
export SECKILL_TEST_REDIS=$(<"$d/redis/redis_url")
export SECKILL_TEST_AMQP=$(<"$d/rabbitmq/amqp_url")
export SECKILL_TEST_PG='postgres://$pg_user@127.0.0.1:$pg_port/postgres?sslmode=disable'
export SECKILL_TEST_ZK=127.0.0.1:$zk_port
export SECKILL_TEST_SERVICES=$SELF
EOF
	log "all servers ready; environment in $d/env"
}

cmd_stop() {
	[[ -n ${1:-} ]] || die "missing DIR argument"
	[[ -d $1 ]] || return 0
	local d rc=0
	d=$(abs_dir "$1")
	rmq_stop "$d/rabbitmq" || rc=1
	zk_stop "$d" || rc=1
	pg_stop "$d" || rc=1
	redis_stop "$d/redis" || rc=1
	rm -f "$d/env"
	return $rc
}

usage() {
	sed -n '2,25p' "$SELF" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	install) cmd_install "${1:-}" ;;
	start)
		VERBOSE=1
		cmd_start "${1:?missing DIR}"
		;;
	stop) cmd_stop "${1:?missing DIR}" ;;
	admin-psql)
		local d
		d=$(abs_dir "${1:?missing DIR}")
		shift
		(cd "$d/pg" && as_user postgres "$PG_BIN/psql" -h "$d/pg" -p "$(<"$d/pg/port")" -U postgres "$@")
		;;
	rabbitmq-start) rmq_start "${1:?missing DIR}" ;;
	rabbitmq-stop) [[ ! -d ${1:?missing DIR} ]] || rmq_stop "$(abs_dir "$1")" ;;
	redis-start) redis_start "${1:?missing DIR}" ;;
	redis-stop) [[ ! -d ${1:?missing DIR} ]] || redis_stop "$(abs_dir "$1")" ;;
	zookeeper-start) zookeeper_start "${1:?missing DIR}" ;;
	zookeeper-stop) [[ ! -d ${1:?missing DIR} ]] || zookeeper_stop "$(abs_dir "$1")" ;;
	*) usage ;;
	esac
}

main "$@"
