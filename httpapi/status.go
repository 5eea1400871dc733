package httpapi

import (
	"net/http"

	"seckill"
)

// Status maps an error code to its HTTP status. It is the only place that
// does: the domain (package seckill) names what went wrong, this package
// says it in HTTP.
func Status(code seckill.Code) int {
	switch code {
	case seckill.EInvalid, seckill.EChallengeFailed:
		return http.StatusBadRequest
	case seckill.ETooLarge:
		return http.StatusRequestEntityTooLarge
	case seckill.EUnauthorized, seckill.EBadCredentials:
		return http.StatusUnauthorized
	case seckill.EForbidden, seckill.EBadPath, seckill.ECrossOrigin:
		return http.StatusForbidden
	case seckill.EMediaType:
		return http.StatusUnsupportedMediaType
	case seckill.EUnknownItem, seckill.ENotFound:
		return http.StatusNotFound
	case seckill.EMethod:
		return http.StatusMethodNotAllowed
	case seckill.ENotLive, seckill.EAlreadyBought, seckill.EConflict, seckill.EUsernameTaken, seckill.ENotAdmitted:
		return http.StatusConflict
	case seckill.ENotDrawn: // a draw's purchase without an open claim window (issue 17)
		return http.StatusConflict
	case seckill.ESoldOut:
		return http.StatusGone
	case seckill.ERateLimited:
		return http.StatusTooManyRequests
	case seckill.EUnavailable, seckill.EOverloaded, seckill.EDependency:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
