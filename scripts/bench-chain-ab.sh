#!/usr/bin/env bash
# bench-chain-ab.sh ENV OLD NEW [WORK]: interleaved rounds of `seckill bench
# chain` against the servers of two seckill binaries (OLD and NEW, e.g. a
# build of an older commit and of main), the same client (NEW's) for both,
# the order of the variants alternating each round (docs/BENCHMARKS.md,
# "The buy chain before and after issue 12").
#
#   ENV   an env file of scripts/services.sh start (SECKILL_TEST_*)
#   RURL  another Redis URL to use instead (e.g. REDIS_AOF=no redis-start)
#   N (2000) timed purchases per run, ROUNDS (5)
# Each run gets its own PostgreSQL database and Redis prefix; the figures
# land in WORK/{old,new}-ROUND/out.json. The servers must be running.
set -u
source "$1"; [[ -n ${RURL:-} ]] && SECKILL_TEST_REDIS=$RURL
OLD=$2 NEW=$3 WORK=${4:-$(mktemp -d)}
N=${N:-2000}; ROUNDS=${ROUNDS:-5}
TOK=cbtoken-0123456789abcdef0123456789abcdef
ADM=cbadmin-0123456789abcdef0123456789abcdef
SEC=cbsecret-0123456789abcdef0123456789abcdef
PGBASE=${SECKILL_TEST_PG%/postgres*}
cd "$(dirname "$0")/.."
one() { # variant round
	local v=$1 r=$2 bin d=$WORK/$1-$2 db=cb_$1_$2
	[[ $v == old ]] && bin=$OLD || bin=$NEW
	mkdir -p $d
	psql "$SECKILL_TEST_PG" -qc "drop database if exists $db" -c "create database $db" >/dev/null
	local pg="$PGBASE/$db?sslmode=disable" pre="cb$r$v$$:"
	$bin backend --listen 127.0.0.1:0 --addr-file $d/b.addr --pg-url "$pg" --redis-url "$SECKILL_TEST_REDIS" --amqp-url "$SECKILL_TEST_AMQP" --redis-prefix "$pre" --relay=false --admin-token $TOK --log-level error >$d/b.log 2>&1 &
	local bp=$!
	for i in $(seq 100); do [[ -s $d/b.addr ]] && break; sleep 0.1; done
	local baddr=$(cat $d/b.addr)
	for i in $(seq 100); do curl -fs http://$baddr/readyz >/dev/null && break; sleep 0.1; done
	$bin edge --public-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --addr-file $d/e.addr --backend-url http://$baddr --backend-token $TOK --admin-token $ADM --session-secret $SEC --limits configs/bench-limits.yaml --redis-url "$SECKILL_TEST_REDIS" --redis-prefix "$pre" --log-level error >$d/e.log 2>&1 &
	local ep=$!
	for i in $(seq 100); do [[ -s $d/e.addr ]] && break; sleep 0.1; done
	sleep 0.3
	local pub=$(tr ' ' '\n' <$d/e.addr | sed -n 's/^public=//p') adm=$(tr ' ' '\n' <$d/e.addr | sed -n 's/^admin=//p')
	for i in $(seq 100); do curl -fs $pub/readyz >/dev/null 2>&1 && break; curl -fs http://$pub/readyz >/dev/null 2>&1 && break; sleep 0.1; done
	[[ $pub == http* ]] || pub=http://$pub; [[ $adm == http* ]] || adm=http://$adm
	$NEW bench chain --public $pub --admin $adm --admin-token $ADM --backend http://$baddr --backend-token $TOK -n $N --json $d/out.json --pg-url "$SECKILL_TEST_PG" --redis-url "$SECKILL_TEST_REDIS" >$d/bench.log 2>&1 || { echo "bench failed $v $r"; tail -5 $d/bench.log; }
	kill $ep $bp; wait $ep $bp 2>/dev/null
	echo "$v $r $(uptime | sed 's/.*load average: //')" 
}
for r in $(seq $ROUNDS); do
	if (( r % 2 )); then one old $r; one new $r; else one new $r; one old $r; fi
done
echo "figures in $WORK"
