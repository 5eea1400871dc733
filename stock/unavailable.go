package stock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"

	"seckill"
)

// unavailable classifies err where it is made: a failure of Redis itself
// (down, unreachable, stalled past the command budget, loading its data,
// busy, refusing writes) becomes seckill.Unavailable, code
// dependency_unavailable (503 with Retry-After), still wrapping err. Any
// other error (an unexpected error reply such as WRONGTYPE, a reply of the
// wrong shape: a bug) is returned as it is, and stays a 500. A nil err
// stays nil.
func unavailable(err error) error {
	if err == nil || !isUnavailable(err) {
		return err
	}
	return seckill.Unavailable(err, "redis is unavailable; retry shortly")
}

// reservationUnavailable is what a reservation answers when Redis failed
// (isUnavailable), guarded or not: backend_unavailable, the code
// POST /v1/reservations has always used for it (docs/BACKEND_API.md). The
// cause is shown in the text but not wrapped, as before: a caller in the
// same process (seckill dev) must not read a Redis timeout as its own
// call's deadline.
func reservationUnavailable(err error) error {
	return fmt.Errorf("%w (%v)", seckill.Errorf(seckill.EUnavailable, "redis is unavailable; retry shortly"), err)
}

// isUnavailable reports whether err says Redis could not serve the command
// now, rather than that the command was wrong. It is the one classifier of
// Redis failures: the Guard uses it for reservations too.
func isUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		// The caller went away: not Redis's fault.
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return unavailableReply(rerr)
	}
	var ne net.Error
	if errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) || // the command budget (redisconf) ran out
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, redis.ErrPoolExhausted) ||
		errors.Is(err, redis.ErrClosed) {
		return true
	}
	// Connection-layer errors go-redis does not export (its pool's
	// "redis: connection not available", "redis: timed out trying to mark
	// connection as unusable", a transport already closed).
	msg := err.Error()
	for _, m := range []string{"redis: connection ", "redis: timed out", "use of closed network connection", "unexpected read from socket"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// unavailableReply tells error replies of a Redis that cannot serve now
// (loading its data after a restart, a script busy, no AOF write, a replica,
// out of memory, out of client slots) from the errors of a bug.
func unavailableReply(err redis.Error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "BUSY ", "MISCONF", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "OOM", "ERR max number of clients reached"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
