package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the request metrics of one listener.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers request metrics under namespace (e.g. "seckill_backend").
func NewMetrics(reg prometheus.Registerer, namespace string) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// MethodLabel is the method label of a request: one of the methods the
// API knows, else "other". The method is chosen by the client, and every
// distinct label value is a series kept forever, so it must come from a
// closed set.
func MethodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// routeLabel is the route template echo matched (never the raw path), or
// "unmatched".
func routeLabel(c echo.Context) string {
	if r := c.Path(); r != "" {
		return r
	}
	return "unmatched"
}

// Middleware counts and times every request by its route template (never
// the raw path) and its method from a closed set, so the number of series
// is bounded by routes x methods x status codes whatever clients send.
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			route := routeLabel(c)
			m.requests.WithLabelValues(route, MethodLabel(c.Request().Method), strconv.Itoa(c.Response().Status)).Inc()
			m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}
