package sqlite

import (
	"context"
	"errors"

	sqlite3lib "modernc.org/sqlite/lib"

	"seckill"
)

// unavailable classifies err where it is made, as package postgres does: a
// database that cannot serve now (its file locked by another process past
// BusyTimeout: SQLITE_BUSY or SQLITE_LOCKED, or the caller's deadline spent
// waiting for the one write connection) becomes seckill.Unavailable, code
// dependency_unavailable (503 with Retry-After), still wrapping err. Any
// other error is returned as it is (a bug stays a 500). A nil err stays nil.
// An embedded database has no connection to lose: the classes package
// postgres maps for a server that is down do not arise here.
func unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	switch c := sqliteCode(err); {
	case c >= 0 && (c&0xff == sqlite3lib.SQLITE_BUSY || c&0xff == sqlite3lib.SQLITE_LOCKED),
		errors.Is(err, context.DeadlineExceeded):
		return seckill.Unavailable(err, "the database is unavailable; retry shortly")
	}
	return err
}
