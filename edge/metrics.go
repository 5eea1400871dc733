package edge

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"seckill/limit"
)

type metrics struct {
	rejections *prometheus.CounterVec
	shadow     *prometheus.CounterVec
	accepted   prometheus.Counter
}

// BucketCounter is implemented by a limiter that can count its buckets.
type BucketCounter interface{ Stats() map[string]int }

func newMetrics(reg prometheus.Registerer, e *Edge) *metrics {
	m := &metrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "seckill_edge", Name: "rejections_total",
			Help: "Requests refused by the edge or the backend, by error code.",
		}, []string{"reason"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "seckill_edge", Name: "shadow_limit_hits_total",
			Help: "Requests a shadow-mode rule would have refused, by rule.",
		}, []string{"rule"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "seckill_edge", Name: "purchases_accepted_total",
			Help: "Purchases accepted (202 queued).",
		}),
	}
	reg.MustRegister(m.rejections, m.shadow, m.accepted)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_edge", Name: "breaker_state",
		Help: "State of the purchases' circuit breaker (the worst over the backends): 0 closed, 1 half-open, 2 open.",
	}, func() float64 { return float64(e.breakerState()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_edge", Name: "backend_in_flight",
		Help: "Backend calls in flight (load shedding bound: seckill_edge_backend_in_flight_limit).",
	}, func() float64 { n, _ := e.guard().InFlight(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "seckill_edge", Name: "backend_in_flight_limit",
		Help: "Bound on backend calls in flight.",
	}, func() float64 { _, m := e.guard().InFlight(); return float64(m) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "seckill_edge", Name: "catalog_refreshes_total",
		Help: "Catalogue fetches from the backend.",
	}, func() float64 { return float64(e.catalog.Refreshes()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "seckill_edge", Name: "dedup_unconfirmed_total",
		Help: "Repeat-buyer Bloom positives let through to the backend because Redis could not confirm them.",
	}, func() float64 { return float64(e.dedup.unconfirmedCount()) }))
	if e.queue != nil {
		polls := prometheus.NewDesc("seckill_edge_queue_polls_total",
			"Waiting-room polls by who answered: the edge's view of the queue (a poll token) or the waiting room's script in Redis.", []string{"answered"}, nil)
		reg.MustRegister(&funcCollector{desc: polls, collect: func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(polls, prometheus.CounterValue, float64(e.queue.viewPolls.Load()), "view")
			ch <- prometheus.MustNewConstMetric(polls, prometheus.CounterValue, float64(e.queue.scriptPolls.Load()), "redis")
		}})
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "seckill_edge", Name: "queue_view_polls_recorded_total",
			Help: "Waiting-room polls answered from the view and handed to Redis for abandon_after (at most one per ticket per half abandon_after).",
		}, func() float64 { return float64(e.queue.recordedPolls.Load()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "seckill_edge", Name: "queue_view_polls_checked_total",
			Help: "Recorded waiting-room polls the script checked against the queue (the others' tickets were known waiting).",
		}, func() float64 { return float64(e.queue.checkedPolls.Load()) }))
	}
	if bc, ok := e.lim.(BucketCounter); ok {
		reg.MustRegister(&bucketCollector{bc: bc, desc: prometheus.NewDesc("seckill_edge_limiter_buckets",
			"Live token buckets by rule.", []string{"rule"}, nil)})
	}
	return m
}

// funcCollector collects the metrics of one description by a function.
type funcCollector struct {
	desc    *prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

func (f *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f *funcCollector) Collect(ch chan<- prometheus.Metric) { f.collect(ch) }

type bucketCollector struct {
	bc   BucketCounter
	desc *prometheus.Desc
}

func (b *bucketCollector) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }
func (b *bucketCollector) Collect(ch chan<- prometheus.Metric) {
	for rule, n := range b.bc.Stats() {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, float64(n), rule)
	}
}

// logShadow logs that a shadow rule would have refused a request: at most
// once a second per rule (the metric counts every hit).
func (e *Edge) logShadow(rule, class string, k limit.Keys) {
	now := time.Now().UnixNano()
	v, _ := e.shadowLogged.LoadOrStore(rule, new(atomic.Int64))
	last := v.(*atomic.Int64)
	prev := last.Load()
	if now-prev < int64(time.Second) || !last.CompareAndSwap(prev, now) {
		return
	}
	e.log.Info("shadow rule would have refused a request", "rule", rule, "class", class, "ip", k.IP, "user", k.User, "item", k.Item)
}
