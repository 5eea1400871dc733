#!/usr/bin/env bash
# run.sh: build bin/seckill and run `seckill dev ARGS...` (what `make run`
# does). On a terminal the binary runs as its own foreground job (set -m), so
# Ctrl-C reaches only seckill, not make: a clean stop exits 0 and make
# reports no error; seckill's own exit status is the script's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Say what the wait is: the first build downloads the modules and compiles
# everything (about two minutes on 2 cores), later ones take seconds.
if [[ ! -x $ROOT/bin/seckill ]]; then
	echo "run.sh: building bin/seckill for the first time: downloading modules and compiling (1 to 3 minutes; later builds take seconds)..." >&2
else
	echo "run.sh: building bin/seckill..." >&2
fi
(cd "$ROOT" && go build -ldflags "-X main.buildVersion=$(git describe --always --dirty 2>/dev/null)" -o bin/seckill ./cmd/seckill)
if [[ -t 0 ]]; then
	set -m
	"$ROOT/bin/seckill" dev "$@"
else
	exec "$ROOT/bin/seckill" dev "$@"
fi
