package e2e

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// checkStackCredentials (issue 13, infrastructure credentials), on a stack
// that `make up` started: each server has its own user and generated
// password, kept in files only their owner reads; a client without them is
// refused by Redis (NOAUTH), RabbitMQ (guest deleted, no anonymous) and
// PostgreSQL (password authentication over TCP); the parts, which got them
// through the URLs in .seckill/env, work (the caller bought through the
// edge); no password appears in `stack.sh status` or in the parts' logs.
func checkStackCredentials(t *testing.T, stackDir, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, f := range []string{"env", "servers/env", "servers/credentials"} {
		fi, err := os.Stat(filepath.Join(stackDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	raw, err := os.ReadFile(filepath.Join(stackDir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	var secrets []string
	for _, k := range []string{"SECKILL_REDIS_URL", "SECKILL_AMQP_URL", "SECKILL_PG_URL"} {
		u, err := url.Parse(vars[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		pass, ok := u.User.Password()
		if u.User.Username() != "seckill" || !ok || len(pass) < 32 {
			t.Fatalf("%s: user %q, password of %d characters; want seckill and a generated password", k, u.User.Username(), len(pass))
		}
		secrets = append(secrets, pass)
	}
	for _, k := range []string{"SECKILL_BACKEND_TOKEN", "SECKILL_SESSION_SECRET"} {
		if len(vars[k]) < 64 {
			t.Fatalf("%s has %d hex digits, want 64", k, len(vars[k]))
		}
		secrets = append(secrets, vars[k])
	}
	if secrets[0] == secrets[1] || secrets[1] == secrets[2] || secrets[0] == secrets[2] {
		t.Fatal("two servers share a password")
	}

	// Redis: the default user is off.
	ru, _ := url.Parse(vars["SECKILL_REDIS_URL"])
	anon := redis.NewClient(&redis.Options{Addr: ru.Host, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("redis without credentials: %v, want NOAUTH", err)
	}
	wrong := redis.NewClient(&redis.Options{Addr: ru.Host, Username: "seckill", Password: "wrong", MaxRetries: -1})
	defer wrong.Close()
	if err := wrong.Ping(ctx).Err(); err == nil {
		t.Error("redis with a wrong password answered")
	}
	opt, err := redis.ParseURL(vars["SECKILL_REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	good := redis.NewClient(opt)
	defer good.Close()
	if err := good.Ping(ctx).Err(); err != nil {
		t.Errorf("redis with the stack's URL: %v", err)
	}
	if err := good.ConfigGet(ctx, "requirepass").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("redis CONFIG as seckill: %v, want NOPERM (no administrative commands)", err)
	}

	// RabbitMQ: guest is gone, the password is needed.
	au, _ := url.Parse(vars["SECKILL_AMQP_URL"])
	for _, user := range []*url.Userinfo{url.UserPassword("guest", "guest"), url.UserPassword("seckill", "wrong")} {
		bad := *au
		bad.User = user
		if c, err := amqp.Dial(bad.String()); err == nil {
			c.Close()
			t.Errorf("rabbitmq accepted %s", user.Username())
		}
	}
	if c, err := amqp.Dial(vars["SECKILL_AMQP_URL"]); err != nil {
		t.Errorf("rabbitmq with the stack's URL: %v", err)
	} else {
		c.Close()
	}

	// PostgreSQL: no trust over TCP, for seckill or for the superuser.
	pu, _ := url.Parse(vars["SECKILL_PG_URL"])
	for _, user := range []*url.Userinfo{url.User("seckill"), url.User("postgres"), url.UserPassword("seckill", "wrong")} {
		bad := *pu
		bad.User = user
		if c, err := pgx.Connect(ctx, bad.String()); err == nil {
			c.Close(ctx)
			t.Errorf("postgresql accepted %s without the password", user.Username())
		}
	}
	if c, err := pgx.Connect(ctx, vars["SECKILL_PG_URL"]); err != nil {
		t.Errorf("postgresql with the stack's URL: %v", err)
	} else {
		c.Close(ctx)
	}

	// No secret in the status or the logs.
	texts := map[string]string{"stack.sh status": status}
	for _, part := range []string{"backend", "worker", "edge"} {
		b, err := os.ReadFile(filepath.Join(stackDir, part+".log"))
		if err != nil {
			t.Fatal(err)
		}
		texts[part+".log"] = string(b)
	}
	for name, text := range texts {
		for i, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows secret %d", name, i)
			}
		}
	}
	if !strings.Contains(status, "seckill:****@") {
		t.Errorf("status does not show the masked URLs:\n%s", status)
	}
}
