#!/usr/bin/env bash
# testenv.sh [go test args...]: start the real servers (scripts/services.sh)
# in a temporary folder, run `go test -count=1 -timeout 15m ARGS` (default
# ./...) with SECKILL_TEST_* set, and always stop the servers afterwards.
#
#   SECKILL_TEST_KEEP=1  leave the servers running and print their environment
#   CI=true              a server that cannot be installed or started is a
#                        failure (otherwise the tests run and skip)
#   REDIS_AOF=no         persistence of the shared test Redis (default no;
#                        always or everysec to run every test on an AOF)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="$ROOT/scripts/services.sh"
DIR=""
GOPID=""

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $GOPID ]] && kill -0 "$GOPID" 2>/dev/null; then
		# go test runs in its own process group: stop it and its test binaries.
		kill -TERM -- "-$GOPID" 2>/dev/null || true
		wait "$GOPID" 2>/dev/null || true
	fi
	if [[ -n $DIR ]]; then
		if [[ ${SECKILL_TEST_KEEP:-} == 1 && -f $DIR/env ]]; then
			echo "testenv.sh: SECKILL_TEST_KEEP=1: servers left running; environment:" >&2
			cat "$DIR/env"
			echo "testenv.sh: stop them with: $SERVICES stop $DIR" >&2
		else
			"$SERVICES" stop "$DIR" || { echo "testenv.sh: stopping the servers failed ($DIR kept)" >&2; exit 1; }
			rm -rf "$DIR"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The shared test Redis runs without persistence (fast); tests of
# durability start a private Redis with REDIS_AOF=always themselves.
export REDIS_AOF=${REDIS_AOF:-no}

servers=1
if ! "$SERVICES" install; then
	[[ ${CI:-} == true ]] && { echo "testenv.sh: installing the servers failed" >&2; exit 1; }
	echo "testenv.sh: warning: servers not installed; tests that need them will skip" >&2
	servers=0
fi
if ((servers)); then
	DIR=$(mktemp -d "${TMPDIR:-/tmp}/seckill-test.XXXXXX")
	chmod 755 "$DIR"
	if "$SERVICES" start "$DIR"; then
		# shellcheck disable=SC1091
		source "$DIR/env"
	else
		[[ ${CI:-} == true ]] && { echo "testenv.sh: starting the servers failed" >&2; exit 1; }
		echo "testenv.sh: warning: servers did not start; tests that need them will skip" >&2
	fi
fi

args=("$@")
((${#args[@]})) || args=(./...)
cd "$ROOT"
# In the background and in its own session, so that a signal to this script
# runs the cleanup at once (bash defers traps while a foreground child runs).
setsid go test -count=1 -timeout 15m "${args[@]}" &
GOPID=$!
rc=0
wait "$GOPID" || rc=$?
GOPID=""
exit "$rc"
