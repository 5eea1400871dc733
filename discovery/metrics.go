package discovery

import "github.com/prometheus/client_golang/prometheus"

// Collector returns a prometheus collector of the gauge
// seckill_edge_backends{url,state}: 1 for every backend known now, state
// being its breaker's ("closed", "half-open", "open"). A backend dropped
// from ZooKeeper disappears from the series.
func (b *Balancer) Collector() prometheus.Collector { return collector{b} }

var backendsDesc = prometheus.NewDesc("seckill_edge_backends",
	"Backends the edge knows (ZooKeeper or static list), by breaker state: closed, half-open or open.",
	[]string{"url", "state"}, nil)

type collector struct{ b *Balancer }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- backendsDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.b.Backends() {
		ch <- prometheus.MustNewConstMetric(backendsDesc, prometheus.GaugeValue, 1, s.URL, s.State)
	}
}
