// Package configs holds the shipped configuration files; limits.yaml is
// also built into the binary (Limits), so `seckill dev` and the edge run
// outside the repository without it.
package configs

import _ "embed"

// Limits is configs/limits.yaml: the default token-bucket rules.
//
//go:embed limits.yaml
var Limits []byte
