#!/usr/bin/env bash
# report-png.sh REPORT.html OUT.png [WIDTHxHEIGHT]: renders a lab report
# (self-contained HTML with inline SVG charts) to a PNG for the docs, with
# Debian's headless Chromium (installed by scripts/services.sh install).
set -euo pipefail
in=$(realpath "${1:?report.html}")
out=$(realpath -m "${2:?out.png}")
size=${3:-1280x2400}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	--disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
	--window-size="${size/x/,}" --screenshot="$out" "file://$in" >/dev/null 2>&1
test -s "$out" && echo "$out"
