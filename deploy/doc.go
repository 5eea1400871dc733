// Package deploy has no code of its own: its tests check the container
// deployment at the root of the repository (Dockerfile, docker-compose.yml)
// against the seckill binary, so that a flag renamed in cmd/seckill, a port
// moved or a subcommand removed breaks `go test` rather than a deployment.
//
// The tests run `docker-compose config` (the Debian package docker-compose,
// installed by `scripts/services.sh install`; no Docker engine is needed),
// build cmd/seckill, and read the SECKILL_* variables each part accepts from
// its --help text.
package deploy
