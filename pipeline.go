package sluice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelog/sluice/publishers"
)

// MiddlewareConfig returns the Echo middleware configuration that Middleware uses: the pipeline as
// Publisher and Counters, and the capture keys of the config. Change it and pass it to
// publishers.WithConfig to customize redaction, sampling or levels.
func (p *Pipeline) MiddlewareConfig() publishers.Config {
	c := publishers.DefaultConfig()
	c.Publisher = p
	c.Counters = p.metrics
	c.Service = p.cfg.Service
	c.RequestBodyLimit = p.cfg.Capture.RequestBodyLimit
	c.ResponseBodyLimit = p.cfg.Capture.ResponseBodyLimit
	c.RequestBodyTimeout = p.cfg.Capture.RequestBodyTimeout
	c.ResponseBodyTimeout = p.cfg.Capture.ResponseBodyTimeout
	c.Redaction = p.cfg.Redaction
	c.Limits = p.cfg.Capture.Limits
	if !p.cfg.Capture.Bodies {
		c.CaptureBodies = publishers.CaptureNone
	}
	return c
}

// Middleware returns the Echo middleware that logs every request into the pipeline.
func (p *Pipeline) Middleware() echo.MiddlewareFunc {
	return publishers.WithConfig(p.MiddlewareConfig())
}

// Handler returns a slog.Handler that publishes records at level and above into the pipeline, and
// passes them on to next (when not nil) so that logs still reach, say, stdout.
func (p *Pipeline) Handler(level slog.Leveler, next slog.Handler) slog.Handler {
	h, err := publishers.NewHandler(publishers.HandlerOptions{
		Publisher: p, Level: level, Service: p.cfg.Service, Next: next, AddSource: true, Counters: p.metrics,
		Redaction: p.cfg.Redaction, Limits: p.cfg.Capture.Limits,
	})
	if err != nil { // a missing Publisher, which p is not, or what New validated already
		panic(err)
	}
	return h
}

// Logger returns a slog.Logger over Handler(slog.LevelInfo, next).
func (p *Pipeline) Logger(next slog.Handler) *slog.Logger {
	return slog.New(p.Handler(slog.LevelInfo, next))
}

// MetricsHandler serves the pipeline's Prometheus metrics; mount it on the host's Echo
// (e.GET("/metrics", echo.WrapHandler(p.MetricsHandler()))) or on an admin listener.
func (p *Pipeline) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{})
}

// Readiness is what /readyz reports.
type Readiness struct {
	Ready bool `json:"ready"`
	// Routes gives each route's sink and breaker state.
	Routes []RouteReadiness `json:"routes"`
	// Bus is the fill of the bus.
	Bus BusReadiness `json:"bus"`
}

// RouteReadiness is one route's part of Readiness.
type RouteReadiness struct {
	Name    string `json:"name"`
	Sink    string `json:"sink"`
	Breaker string `json:"breaker"`
	Error   string `json:"error,omitempty"`
}

// BusReadiness is the bus's part of Readiness.
type BusReadiness struct {
	DepthEvents int64   `json:"depth_events"` // accepted and not yet written, open chunks included
	DepthBytes  int64   `json:"depth_bytes"`
	InFlight    int64   `json:"in_flight"` // chunks handed to routes and not yet acknowledged
	Capacity    int     `json:"capacity_events_per_route"`
	Fill        float64 `json:"fill"` // the fullest route's share, 0..1 (approximated by depth / routes / capacity)
}

// Readiness reports whether the pipeline is accepting events and each route's state. It is ready
// unless it is closing or every route's breaker is open.
func (p *Pipeline) Readiness() Readiness {
	st := p.bus.Stats()
	r := Readiness{Ready: !p.closing.Load()}
	open := 0
	for _, rt := range p.routes {
		rr := RouteReadiness{Name: rt.cfg.Name, Sink: rt.sink.Name(), Breaker: rt.breaker.State().String()}
		if rt.sink.Name() == "postgres" {
			rr.Error, _ = p.pgStatus.Load().(string)
		}
		if rt.breaker.State() == BreakerOpen {
			open++
		}
		r.Routes = append(r.Routes, rr)
	}
	if len(p.routes) > 0 && open == len(p.routes) {
		r.Ready = false
	}
	capacity := p.bus.Config().MaxEvents
	depth := st.DepthEvents + st.ReservedEvents
	r.Bus = BusReadiness{DepthEvents: depth, DepthBytes: st.DepthBytes + st.ReservedBytes, InFlight: st.InFlight, Capacity: capacity}
	if n := len(p.routes); n > 0 && capacity > 0 {
		r.Bus.Fill = float64(depth) / float64(n) / float64(capacity)
	}
	return r
}

// UndeliveredError is Close's error when some accepted events could not be written before the
// deadline.
type UndeliveredError struct {
	Events   int64 // accepted events not written, counted once per route that accepted them
	Messages int   // the bus messages (chunks) that carried them
	Err      error
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("sluice: %d accepted events (in %d chunks) were not written before shutdown: %v", e.Events, e.Messages, e.Err)
}

func (e *UndeliveredError) Unwrap() error { return e.Err }

// Close stops accepting events, writes everything accepted (the batches are flushed at once, not at
// their max wait), and releases the sinks, within ctx. Call it after the HTTP server has stopped
// accepting requests. It returns an *UndeliveredError when ctx ended before everything was written.
// Closing twice returns the first result.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closed.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Pipeline) close(ctx context.Context) error {
	start := time.Now()
	p.closing.Store(true)
	for _, r := range p.routes {
		r.chunks.flush() // a Publish that raced closing lands in a chunk sealed at its linger: Drain waits for it
		r.batches.Drain()
		r.breaker.Hurry() // an open breaker tries now: storage that is back gets the backlog
	}
	drainErr := p.bus.Drain(ctx)
	if drainErr != nil {
		// The deadline passed: end the writes still waiting (a slow sink, an open breaker); their
		// events stay unacknowledged and are counted below.
		for _, r := range p.routes {
			r.batches.Abort()
		}
	}
	if err := p.router.Close(); err != nil {
		p.log.Warn("router close", "error", err)
	}
	for _, r := range p.routes {
		r.failures.close() // the failures not logged yet: no line is due later
	}
	_ = p.bus.Close()
	undelivered, events := p.bus.Undelivered(), p.bus.UndeliveredEvents()
	p.closeSinks()
	if undelivered > 0 || drainErr != nil {
		if drainErr == nil {
			drainErr = errors.New("router closed first")
		}
		return &UndeliveredError{Events: events, Messages: undelivered, Err: drainErr}
	}
	p.log.Info("sluice flushed and closed", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (p *Pipeline) closeSinks() {
	for _, s := range p.sinks {
		if err := s.Close(); err != nil {
			p.log.Warn("close sink", "sink", s.Name(), "error", err)
		}
	}
	p.sinks = nil
	for _, c := range p.closers {
		_ = c()
	}
	p.closers = nil
	if p.pool != nil {
		p.pool.Close()
	}
}
