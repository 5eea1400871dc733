# syntax=docker/dockerfile:1
#
# One image for every part of seckill: the container's command picks the
# part (`backend`, `worker`, `edge`, `reconcile`, `migrate`); every setting is
# a flag or a SECKILL_* environment variable (see docker-compose.yml).
#
#   docker build -t seckill .
#   docker run --rm seckill backend --help
#
# The cache mounts need BuildKit: with docker-compose 1.29 build with
# DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1 docker-compose build.

ARG GO_VERSION=1.26

# ------------------------------------------------------------------ build
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so a change of source does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /seckill ./cmd/seckill

# ------------------------------------------------------------------ run
# Why debian:bookworm-slim and not distroless: the backend, the edge and the
# worker are health-checked over HTTP (/readyz, /healthz) by docker-compose,
# and a healthcheck runs inside the container. Distroless has no shell and no
# HTTP client, and the binary has no `healthcheck` subcommand, so it could not
# be checked from inside; curl in a slim Debian can. The binary itself is
# static (CGO_ENABLED=0) and would run unchanged on distroless/static.
#
# No HEALTHCHECK here: which port and path to probe depends on the part the
# container runs (backend 8090, edge 8081, worker's optional metrics port), so
# each service declares its own healthcheck in docker-compose.yml.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 seckill \
    && useradd --system --uid 65532 --gid seckill --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin seckill
COPY --from=build /seckill /seckill
# Token bucket rules: SECKILL_LIMITS=/configs/limits.yaml (the edge's default,
# configs/limits.yaml, resolves to the same file from the working folder /).
COPY configs/ /configs/
WORKDIR /
USER 65532:65532
# 8080 edge public API, 8081 edge admin API, 8090 backend API,
# 9091 worker metrics (only with SECKILL_WORKER_METRICS_LISTEN).
EXPOSE 8080 8081 8090 9091
ENTRYPOINT ["/seckill"]
CMD ["--help"]
