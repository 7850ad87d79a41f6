package sluice

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/subscribers"
)

// metrics is the pipeline's Prometheus registry. It is the publishers' Counters, the route writers'
// Observer, and a Collector that reads the bus's counters and the routes' batch subscribers' at scrape
// time (so the bus stays the one source of truth for what it dropped, and each batch subscriber for
// the batches it handed out again).
type metrics struct {
	reg *prometheus.Registry
	bus *bus.Bus

	published                   *prometheus.CounterVec
	publishedHTTP, publishedApp prometheus.Counter
	sampledOut                  *prometheus.CounterVec
	written                     *prometheus.CounterVec
	writeErrors                 *prometheus.CounterVec
	batchSize                   *prometheus.HistogramVec
	writeSeconds                *prometheus.HistogramVec
	breaker                     *prometheus.GaugeVec
	breakerWait                 *prometheus.HistogramVec
	throttleWait                *prometheus.HistogramVec

	dropped     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	retries     *prometheus.CounterVec
	unrouted    prometheus.Counter

	depthDesc, bytesDesc, inFlightDesc, redeliveredDesc, capacityDesc *prometheus.Desc
	batchesRedeliveredDesc                                            *prometheus.Desc

	// sinkOf is each route's sink type (the sink label), and batchesOf its batch subscriber (read at
	// scrape time): set as the routes are built, read-only once the pipeline runs.
	sinkOf    map[string]string
	batchesOf map[string]*subscribers.BatchSubscriber
}

func newMetrics(b *bus.Bus) *metrics {
	m := &metrics{
		sinkOf:    map[string]string{},
		batchesOf: map[string]*subscribers.BatchSubscriber{},
		reg:       prometheus.NewRegistry(),
		bus:       b,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_dropped_total",
			Help: "Events not accepted by a route, or not decodable, by reason and route (empty route: before routing)."},
			[]string{"reason", "route"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_dead_letters_total",
			Help: "Events a route could not store and set aside as dead letters, by route and reason."}, []string{"route", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_retries_total",
			Help: "Retries of batch writes that failed transiently (one per retry of a batch, whatever its size), by route."}, []string{"route"}),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_unrouted_total",
			Help: "Events that no route takes (by configuration)."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_published_total",
			Help: "Events accepted by the bus, by source (http, app)."}, []string{"source"}),
		sampledOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_sampled_out_total",
			Help: "Successful requests that sampling kept out, by route template."}, []string{"route"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sink_events_written_total",
			Help: "Events durably written, by route and sink type."}, []string{"route", "sink"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sink_write_errors_total",
			Help: "Failed batch writes, by route and sink type."}, []string{"route", "sink"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_sink_batch_events",
			Help:    "Events per batch write attempt, by route and sink type.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000}}, []string{"route", "sink"}),
		writeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_sink_write_seconds",
			Help: "Time in the sink's Write call per batch write attempt, by route and sink type (waiting for the " +
				"throttle, the breaker or a retry is not in it).", Buckets: prometheus.DefBuckets}, []string{"route", "sink"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_breaker_state",
			Help: "Circuit breaker state by route and sink type: 0 closed, 1 half-open, 2 open."}, []string{"route", "sink"}),
		breakerWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_breaker_wait_seconds",
			Help:    "Time a batch write attempt waited for the route's circuit breaker (about 0 while it is closed, up to the cooldown while open), by route.",
			Buckets: waitBuckets()}, []string{"route"}),
		throttleWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_throttle_wait_seconds",
			Help:    "Time a batch waited for the route's throttle (routes with throttle.events_per_second only), by route.",
			Buckets: waitBuckets()}, []string{"route"}),
		depthDesc: prometheus.NewDesc("sluice_queue_depth",
			"Events accepted and not yet written (in open chunks or in the bus), summed over routes.", nil, nil),
		bytesDesc: prometheus.NewDesc("sluice_queue_bytes",
			"Bytes accepted and not yet written (in open chunks or in the bus), summed over routes.", nil, nil),
		inFlightDesc: prometheus.NewDesc("sluice_queue_in_flight",
			"Bus messages (chunks of events) handed to routes and not yet acknowledged.", nil, nil),
		redeliveredDesc: prometheus.NewDesc("sluice_bus_redelivered_total",
			"Bus messages (chunks of events) offered again after a nack: a web node's chunks whose publish to the broker "+
				"failed (a route's failed batch is handed out again whole: sluice_batches_redelivered_total).", nil, nil),
		batchesRedeliveredDesc: prometheus.NewDesc("sluice_batches_redelivered_total",
			"Batches handed out again, the same batch (same events, same id), after their write failed and its retries were "+
				"spent, by route (the routes that gather chunks into batches; a route of one chunk per batch, a web node's "+
				"or a worker's, gives the chunk back to the bus or the broker instead).",
			[]string{"route"}, nil),
		capacityDesc: prometheus.NewDesc("sluice_queue_capacity",
			"The bus bound per route, in events.", nil, nil),
	}
	m.publishedHTTP = m.published.WithLabelValues(publishers.SourceHTTP)
	m.publishedApp = m.published.WithLabelValues(publishers.SourceApp)
	for _, reason := range []string{bus.ReasonClosed, bus.ReasonTooLarge, publishers.ReasonPublishError} {
		m.dropped.WithLabelValues(reason, "") // the drops before routing, at 0 from the start
	}
	m.reg.MustRegister(m.published, m.sampledOut, m.written, m.writeErrors, m.batchSize, m.writeSeconds, m.breaker,
		m.breakerWait, m.throttleWait,
		m.dropped, m.deadLetters, m.retries, m.unrouted, m,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// waitBuckets are the buckets of the waiting times: from nothing (a closed breaker) to a cooldown.
func waitBuckets() []float64 {
	return []float64{0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
}

// breakerWaited observes a write attempt's wait for its route's breaker (BreakerConfig.OnWait).
func (m *metrics) breakerWaited(route string, waited time.Duration) {
	m.breakerWait.WithLabelValues(route).Observe(waited.Seconds())
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.depthDesc, m.bytesDesc, m.inFlightDesc, m.redeliveredDesc, m.capacityDesc, m.batchesRedeliveredDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector with a snapshot of the bus.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.bus.Stats()
	ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(st.DepthEvents+st.ReservedEvents))
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.GaugeValue, float64(st.DepthBytes+st.ReservedBytes))
	ch <- prometheus.MustNewConstMetric(m.inFlightDesc, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(m.redeliveredDesc, prometheus.CounterValue, float64(st.Redelivered))
	ch <- prometheus.MustNewConstMetric(m.capacityDesc, prometheus.GaugeValue, float64(m.bus.Config().MaxEvents))
	for route, b := range m.batchesOf {
		ch <- prometheus.MustNewConstMetric(m.batchesRedeliveredDesc, prometheus.CounterValue, float64(b.Redelivered()), route)
	}
}

// Published implements publishers.Counters. It is called once per event: the counters of the two
// sources are looked up once.
func (m *metrics) Published(source string) {
	switch source {
	case publishers.SourceHTTP:
		m.publishedHTTP.Inc()
	case publishers.SourceApp:
		m.publishedApp.Inc()
	default:
		m.published.WithLabelValues(source).Inc()
	}
}

// Dropped implements publishers.Counters. The pipeline's Publish counts every drop itself, per route,
// before it returns the error that publishers count here: nothing to add.
func (m *metrics) Dropped(_, _ string) {}

// drop counts n events dropped for reason on route ("" before routing).
func (m *metrics) drop(reason, route string, n int) {
	m.dropped.WithLabelValues(reason, route).Add(float64(n))
}

// SampledOut implements publishers.Counters.
func (m *metrics) SampledOut(route string) { m.sampledOut.WithLabelValues(route).Inc() }

// BatchWritten implements subscribers.Observer.
func (m *metrics) BatchWritten(route string, events, _ int, took time.Duration, err error) {
	sink := m.sinkOf[route]
	m.batchSize.WithLabelValues(route, sink).Observe(float64(events))
	m.writeSeconds.WithLabelValues(route, sink).Observe(took.Seconds())
	if err != nil {
		m.writeErrors.WithLabelValues(route, sink).Inc()
		return
	}
	m.written.WithLabelValues(route, sink).Add(float64(events))
}

// Retried implements subscribers.Observer.
func (m *metrics) Retried(route string) { m.retries.WithLabelValues(route).Inc() }

// DeadLettered implements subscribers.Observer.
func (m *metrics) DeadLettered(route, reason string, n int) {
	m.deadLetters.WithLabelValues(route, reason).Add(float64(n))
}

// Rejected implements subscribers.Observer: events a route could neither store nor dead-letter.
func (m *metrics) Rejected(route, reason string, n int) { m.drop(reason, route, n) }

// route makes every counter series of a route exist at 0 from the start, with each label set it can
// have, so that an alert on a series that has not happened yet (a drop, a dead letter, a retry) sees
// 0 rather than no data.
func (m *metrics) route(name, sink string) {
	for _, reason := range []string{bus.ReasonQueueFull, bus.ReasonTooLarge, bus.ReasonClosed} {
		m.dropped.WithLabelValues(reason, name)
	}
	for _, reason := range []string{subscribers.ReasonDecodeError, subscribers.ReasonOversize, subscribers.ReasonInvalidData} {
		m.deadLetters.WithLabelValues(name, reason)
	}
	m.retries.WithLabelValues(name)
	m.written.WithLabelValues(name, sink)
	m.writeErrors.WithLabelValues(name, sink)
}
