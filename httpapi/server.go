package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
)

// Limits every seckill listener applies (issue 13 M6).
const (
	// MaxHeaderBytes bounds the request line and headers. Go's default is
	// 1 MiB, so 200 connections sending unfinished headers held 380 MB.
	// Go reads up to 4 KiB more than this before answering 431 Request
	// Header Fields Too Large itself.
	MaxHeaderBytes = 16 << 10
	// ReadHeaderTimeout bounds how long a client may take to send them.
	ReadHeaderTimeout = 5 * time.Second
	// IdleTimeout closes keep-alive connections nobody uses.
	IdleTimeout = 2 * time.Minute
)

// NewServer returns the http.Server of one seckill listener: headers
// bounded to MaxHeaderBytes and ReadHeaderTimeout, idle connections closed
// after IdleTimeout. Every listener is built with it; a caller may set
// more (ReadTimeout) on the result.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
	}
}

// APIHeaders sets the headers of every API answer: X-Content-Type-Options:
// nosniff (a browser never reads a JSON answer as HTML or script) and
// Cache-Control: no-store (answers carry sessions, stock and orders; no
// cache may keep them). A handler that may be cached (the storefront's
// pages and assets) sets its own Cache-Control, which replaces this one.
func APIHeaders() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-store")
			return next(c)
		}
	}
}

// CodeLabel is an error code as a metric label: a code of the contract
// (seckill.E*), else "other" (a code read from another service's answer is
// not trusted to come from the closed set).
func CodeLabel(code seckill.Code) string {
	switch code {
	case seckill.EInvalid, seckill.ETooLarge, seckill.EUnknownItem, seckill.ENotFound,
		seckill.ENotLive, seckill.ESoldOut, seckill.EAlreadyBought, seckill.EConflict,
		seckill.EUsernameTaken, seckill.EUnauthorized, seckill.EForbidden, seckill.EMethod,
		seckill.EUnavailable, seckill.EOverloaded, seckill.ERateLimited, seckill.EInternal,
		seckill.EChallengeFailed, seckill.EBadPath, seckill.EBadCredentials, seckill.EDependency,
		seckill.ECrossOrigin, seckill.EMediaType:
		return string(code)
	case seckill.ENotDrawn: // issue 17
		return string(code)
	}
	return "other"
}
