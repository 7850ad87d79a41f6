package sluice

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelog/sluice/bus"
)

// metrics is the pipeline's Prometheus registry. It is the publishers' Counters, the batchers'
// Observer, and a Collector that reads the bus's counters at scrape time (so the bus stays the one
// source of truth for what it dropped).
type metrics struct {
	reg *prometheus.Registry
	bus *bus.Bus

	published    *prometheus.CounterVec
	sampledOut   *prometheus.CounterVec
	written      *prometheus.CounterVec
	writeErrors  *prometheus.CounterVec
	batchSize    *prometheus.HistogramVec
	writeSeconds *prometheus.HistogramVec
	breaker      *prometheus.GaugeVec

	mu      sync.Mutex
	dropped map[string]float64 // reasons the bus does not count: publish_error, decode_error

	droppedDesc, depthDesc, bytesDesc, inFlightDesc, redeliveredDesc, capacityDesc *prometheus.Desc
}

func newMetrics(b *bus.Bus) *metrics {
	m := &metrics{
		reg:     prometheus.NewRegistry(),
		bus:     b,
		dropped: map[string]float64{},
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_published_total",
			Help: "Events accepted by the bus, by source (http, app)."}, []string{"source"}),
		sampledOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_sampled_out_total",
			Help: "Successful requests that sampling kept out, by route template."}, []string{"route"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sink_events_written_total",
			Help: "Events durably written, by sink route."}, []string{"sink"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sink_write_errors_total",
			Help: "Failed batch writes, by sink route."}, []string{"sink"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_sink_batch_events",
			Help:    "Events per batch write attempt, by sink route.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000}}, []string{"sink"}),
		writeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_sink_write_seconds",
			Help: "Batch write latency, by sink route.", Buckets: prometheus.DefBuckets}, []string{"sink"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_breaker_state",
			Help: "Circuit breaker state by sink route: 0 closed, 1 half-open, 2 open."}, []string{"sink"}),
		droppedDesc: prometheus.NewDesc("sluice_events_dropped_total",
			"Events not accepted or not delivered, by reason.", []string{"reason"}, nil),
		depthDesc: prometheus.NewDesc("sluice_queue_depth",
			"Events accepted by the bus and not yet written, summed over routes.", nil, nil),
		bytesDesc: prometheus.NewDesc("sluice_queue_bytes",
			"Bytes accepted by the bus and not yet written, summed over routes.", nil, nil),
		inFlightDesc: prometheus.NewDesc("sluice_queue_in_flight",
			"Messages handed to routes and not yet acknowledged.", nil, nil),
		redeliveredDesc: prometheus.NewDesc("sluice_bus_redelivered_total",
			"Messages offered again after a failed write.", nil, nil),
		capacityDesc: prometheus.NewDesc("sluice_queue_capacity",
			"The bus bound per route, in events.", nil, nil),
	}
	m.reg.MustRegister(m.published, m.sampledOut, m.written, m.writeErrors, m.batchSize, m.writeSeconds, m.breaker, m,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.droppedDesc, m.depthDesc, m.bytesDesc, m.inFlightDesc, m.redeliveredDesc, m.capacityDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector with a snapshot of the bus.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.bus.Stats()
	dropped := map[string]float64{}
	for reason, n := range st.DroppedEvents {
		dropped[reason] += float64(n)
	}
	m.mu.Lock()
	for reason, n := range m.dropped {
		dropped[reason] += n
	}
	m.mu.Unlock()
	for reason, n := range dropped {
		ch <- prometheus.MustNewConstMetric(m.droppedDesc, prometheus.CounterValue, n, reason)
	}
	ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(st.DepthEvents))
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.GaugeValue, float64(st.DepthBytes))
	ch <- prometheus.MustNewConstMetric(m.inFlightDesc, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(m.redeliveredDesc, prometheus.CounterValue, float64(st.Redelivered))
	ch <- prometheus.MustNewConstMetric(m.capacityDesc, prometheus.GaugeValue, float64(m.bus.Config().MaxEvents))
}

// Published implements publishers.Counters.
func (m *metrics) Published(source string) { m.published.WithLabelValues(source).Inc() }

// Dropped implements publishers.Counters. Drops that the bus refused are counted by the bus itself
// (read at scrape time); only the others are counted here.
func (m *metrics) Dropped(_, reason string) {
	if busReason(reason) {
		return
	}
	m.mu.Lock()
	m.dropped[reason]++
	m.mu.Unlock()
}

// SampledOut implements publishers.Counters.
func (m *metrics) SampledOut(route string) { m.sampledOut.WithLabelValues(route).Inc() }

// BatchWritten implements subscribers.Observer.
func (m *metrics) BatchWritten(route string, events, _ int, took time.Duration, err error) {
	m.batchSize.WithLabelValues(route).Observe(float64(events))
	m.writeSeconds.WithLabelValues(route).Observe(took.Seconds())
	if err != nil {
		m.writeErrors.WithLabelValues(route).Inc()
		return
	}
	m.written.WithLabelValues(route).Add(float64(events))
}

// Rejected implements subscribers.Observer.
func (m *metrics) Rejected(_, reason string, n int) {
	m.mu.Lock()
	m.dropped[reason] += float64(n)
	m.mu.Unlock()
}

func busReason(reason string) bool {
	switch reason {
	case bus.ReasonQueueFull, bus.ReasonTooLarge, bus.ReasonNoSubscribers, bus.ReasonClosed, bus.ReasonSubscriberFull:
		return true
	}
	return false
}
