#!/usr/bin/env bash
# compose-secrets.sh: print a .env for docker-compose.yml with every secret it
# requires, each 32 random bytes in hex. Run it once and keep the file (mode
# 0600): the server passwords are set when their volumes are first made.
#
#   scripts/compose-secrets.sh >.env && chmod 600 .env
set -euo pipefail
hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for name in SECKILL_ADMIN_TOKEN SECKILL_SESSION_SECRET SECKILL_BACKEND_TOKEN \
	SECKILL_REDIS_PASSWORD SECKILL_AMQP_PASSWORD SECKILL_PG_PASSWORD; do
	echo "$name=$(hex)"
done
