package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"seckill"
)

// TestUnavailableClassifies: connection-class failures of PostgreSQL get
// code dependency_unavailable (503) and keep their cause; a statement's
// own errors keep theirs (integrity: invalid) or none (a bug: 500).
func TestUnavailableClassifies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A real connect error: nothing listens on port 1.
	_, refused := pgconn.Connect(ctx, "postgres://seckill@127.0.0.1:1/seckill?sslmode=disable&connect_timeout=2")
	var ce *pgconn.ConnectError
	if !errors.As(refused, &ce) {
		t.Fatalf("connecting to a closed port gave %T %v", refused, refused)
	}
	cases := []struct {
		name string
		err  error
		code seckill.Code
	}{
		{"connection refused", refused, seckill.EDependency},
		{"net error", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, seckill.EDependency},
		{"eof", io.ErrUnexpectedEOF, seckill.EDependency},
		{"conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), seckill.EDependency},
		{"deadline", context.DeadlineExceeded, seckill.EDependency},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, seckill.EDependency},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, seckill.EDependency},
		{"connection failure", &pgconn.PgError{Code: "08006"}, seckill.EDependency},
		{"too many connections", &pgconn.PgError{Code: "53300"}, seckill.EDependency},
		{"canceled by the caller", context.Canceled, seckill.EInternal},
		{"syntax error", &pgconn.PgError{Code: "42601"}, seckill.EInternal},
		{"no rows", pgx.ErrNoRows, seckill.EInternal},
		{"plain error", errors.New("scanning: wrong type"), seckill.EInternal},
		{"check violation", invalidData(&pgconn.PgError{Code: checkViolation, ConstraintName: "items_stock_check"}), seckill.EInvalid},
	}
	for _, c := range cases {
		err := fmt.Errorf("reading item: %w", unavailable(c.err))
		if code := seckill.ErrorCode(err); code != c.code {
			t.Errorf("%s (%v): code %s, want %s", c.name, c.err, code, c.code)
		}
		if !errors.Is(err, c.err) && c.code != seckill.EInvalid {
			t.Errorf("%s: the cause is lost: %v", c.name, err)
		}
	}
	if unavailable(nil) != nil {
		t.Fatal("nil became an error")
	}
}
