#!/usr/bin/env bash
# run.sh: build bin/seckill and run `seckill dev ARGS...` (what `make run`
# does). On a terminal the binary runs as its own foreground job (set -m), so
# Ctrl-C reaches only seckill, not make: a clean stop exits 0 and make
# reports no error; seckill's own exit status is the script's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(cd "$ROOT" && go build -o bin/seckill ./cmd/seckill)
if [[ -t 0 ]]; then
	set -m
	"$ROOT/bin/seckill" dev "$@"
else
	exec "$ROOT/bin/seckill" dev "$@"
fi
