package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"seckill"
)

// unavailable classifies err where it is made: a failure of the connection
// to PostgreSQL (it is down, restarting, unreachable, out of connection
// slots, or did not answer in time) becomes seckill.Unavailable, code
// dependency_unavailable (503 with Retry-After), still wrapping err. Any
// other error (a bug: bad SQL, a scan into the wrong type, a refused
// login) is returned as it is, and stays a 500. A nil err stays nil.
//
// The worker does not look at this code: it retries every error but
// seckill.EInvalid, as before.
func unavailable(err error) error {
	if err == nil || !isConnectionFailure(err) {
		return err
	}
	return seckill.Unavailable(err, "the database is unavailable; retry shortly")
}

// isConnectionFailure reports whether err says PostgreSQL could not be
// reached or used, rather than that a statement was wrong.
func isConnectionFailure(err error) bool {
	if errors.Is(err, context.Canceled) {
		// The caller went away: nobody waits for the answer, and it is
		// not the database's fault.
		return false
	}
	var pgErr *pgconn.PgError
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		// A connection could not be made: the server is down, starting,
		// full, or refuses this database for now (ALLOW_CONNECTIONS
		// false: SQLSTATE 55000). Only a refused login or a database that
		// does not exist is the configuration's fault.
		if errors.As(err, &pgErr) {
			return !configState(pgErr.Code)
		}
		return true
	}
	if errors.As(err, &pgErr) {
		return unavailableState(pgErr.Code)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		pgconn.Timeout(err),
		pgconn.SafeToRetry(err), // failed before anything reached the server
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed):
		return true
	}
	return false
}

// configState reports whether a SQLSTATE met while connecting is the
// configuration's fault: a refused login (class 28) or no such database
// (3D000). No retry fixes those.
func configState(code string) bool {
	return strings.HasPrefix(code, "28") || code == "3D000"
}

// unavailableState reports whether a SQLSTATE says the server cannot serve
// now: connection exceptions (class 08), shutdown and recovery (57P01
// admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 57P05
// idle_session_timeout) and too many connections (53300).
func unavailableState(code string) bool {
	switch code {
	case "57P01", "57P02", "57P03", "57P05", "53300":
		return true
	}
	return strings.HasPrefix(code, "08")
}
