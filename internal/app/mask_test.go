package app

import "testing"

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://seckill:s3cr3t@127.0.0.1:6379/0":                            "redis://seckill:****@127.0.0.1:6379/0",
		"redis://:s3cr3t@127.0.0.1:6379/0":                                   "redis://:****@127.0.0.1:6379/0",
		"amqp://seckill:s3cr3t@rabbitmq:5672/":                               "amqp://seckill:****@rabbitmq:5672/",
		"postgres://seckill@db:5432/seckill?password=s3cr3t&sslmode=disable": "postgres://seckill@db:5432/seckill?password=****&sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable":         "postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable",
		"127.0.0.1:8080": "127.0.0.1:8080",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
