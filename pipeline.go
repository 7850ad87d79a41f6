package sluice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/subscribers"
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

// RouteInfo describes a route for people: what it takes and where its events go.
type RouteInfo struct {
	Name    string
	Sink    string
	Levels  []string
	Where   string        // said by the route's sink type
	MaxWait time.Duration // the longest an event waits for its batch
}

// Routes describes the pipeline's routes, in the order of the configuration.
func (p *Pipeline) Routes() []RouteInfo {
	out := make([]RouteInfo, 0, len(p.routes))
	for _, r := range p.routes {
		ri := RouteInfo{Name: r.cfg.Name, Sink: r.cfg.Sink, Levels: r.cfg.Levels, MaxWait: r.cfg.Batch.MaxWait, Where: r.cfg.Sink}
		if o := p.opened[r.cfg.Sink]; o != nil {
			ri.Where = o.Where(subscribers.Route{Name: r.cfg.Name, Options: r.cfg.Options})
		}
		out = append(out, ri)
	}
	return out
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
		if o := p.opened[rt.cfg.Sink]; o != nil {
			rr.Error = o.Status()
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

// UndeliveredError is Close's error when some accepted events were not written: the deadline came
// first (Err wraps the context's error), or the bus refused chunks of them (Err says so).
//
// The count is exact, per route: the events the route accepted (Publish appended them to its chunks)
// minus those its sink confirmed written (or kept as dead letters) before the cut at the deadline,
// wherever the others were (an open chunk, the bus, a batch waiting or being written). At the cut the
// writes under way are cancelled through their context; one that ends without an answer is looked
// up in its store (subscribers.Verifier: a store may complete a write whose client gave up) and counts
// as written if it is there. Only the events of writes whose look-up could not end within cutSettle
// are InFlight: a store may hold them although they count as not written.
type UndeliveredError struct {
	// Events is the sum of the routes' NotWritten: an event that two routes accepted counts twice.
	Events int64
	// Routes has one entry per route, in the order of the configuration.
	Routes []RouteUndelivered
	Err    error
}

// RouteUndelivered is one route's part of an UndeliveredError.
type RouteUndelivered struct {
	Route string
	Sink  string
	// Accepted is how many events the route accepted since New.
	Accepted int64
	// NotWritten is how many of them its sink did not confirm written.
	NotWritten int64
	// InFlight is how many of NotWritten were in batches handed to the sink whose writes (and the
	// look-ups that follow a write cut without an answer) had not ended when the cut settled: a store
	// may hold some of them.
	InFlight int64
}

func (e *UndeliveredError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice: %d accepted events were not written before shutdown (", e.Events)
	var inFlight int64
	for i, r := range e.Routes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "route %s: %d of %d", r.Route, r.NotWritten, r.Accepted)
		inFlight += r.InFlight
	}
	b.WriteString(")")
	if inFlight > 0 {
		fmt.Fprintf(&b, "; %d of them were in writes under way or waiting at the deadline (a store may hold some of those)", inFlight)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *UndeliveredError) Unwrap() error { return e.Err }

// Close stops accepting events, writes everything accepted (the batches are flushed at once, not at
// their max wait), and releases the sinks, within ctx. Call it after the HTTP server has stopped
// accepting requests. It returns an *UndeliveredError when some accepted event was not written by the
// time ctx ended, and logs the same count (per route) before it closes the sinks. It returns by the
// time ctx ends, plus the moment the cut takes: closing the router, the sinks and the PostgreSQL pool
// is left running in the background when it would take longer (a server that does not answer holds
// pgxpool.Close for pgx's 15 s cancel request). Closing twice returns the first result.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closed.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

// cutSettle is how long the cut at a shutdown deadline waits for the writes it cancelled to end and
// to be looked up in their stores (subscribers.DefaultVerifyTimeout, and some): what a shutdown may
// take past its deadline.
const cutSettle = subscribers.DefaultVerifyTimeout + 250*time.Millisecond

func (p *Pipeline) close(ctx context.Context) error {
	start := time.Now()
	p.closing.Store(true)
	accepted := make([]int64, len(p.routes))
	for i, r := range p.routes {
		accepted[i] = r.chunks.close() // final: no event is accepted any more, the open chunks are on the bus
		r.batches.Drain()
		r.breaker.Hurry() // an open breaker tries now: storage that is back gets the backlog
	}
	drainErr := p.bus.Drain(ctx)
	inFlight := make([]int, len(p.routes))
	if drainErr != nil {
		// The deadline passed: the cut. The writes still under way or waiting (a slow sink, an open
		// breaker) are cancelled; one that ended without an answer is looked up in its store (a store
		// may complete a write whose client gave up), within cutSettle, so that the count is exact.
		var wg sync.WaitGroup
		for i, r := range p.routes {
			wg.Go(func() { inFlight[i] = r.batches.Cut(cutSettle) })
		}
		wg.Wait()
	}
	_ = p.bus.Close() // ends every route's subscription: what was acknowledged by now is final
	for _, r := range p.routes {
		r.failures.close() // the failures not logged yet: no line is due later
	}
	u := &UndeliveredError{Err: drainErr}
	for i, r := range p.routes {
		ru := RouteUndelivered{Route: r.cfg.Name, Sink: r.sink.Name(), Accepted: accepted[i],
			NotWritten: accepted[i] - p.bus.AckedEvents(r.topic), InFlight: int64(inFlight[i])}
		u.Events += ru.NotWritten
		u.Routes = append(u.Routes, ru)
	}
	if u.Events == 0 {
		p.release(ctx)
		p.log.Info("sluice flushed and closed", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if u.Err == nil {
		u.Err = errors.New("the bus refused chunks of them (see sluice_events_dropped_total)")
	}
	// Said before the sinks are closed: closing them may outlast the deadline, and the process with it.
	routes := make([]any, 0, len(u.Routes))
	for _, r := range u.Routes {
		routes = append(routes, slog.Group(r.Route, "not_written", r.NotWritten, "accepted", r.Accepted, "in_flight", r.InFlight))
	}
	p.log.Error("sluice: accepted events were not written", "not_written", u.Events, slog.Group("route", routes...),
		"cause", u.Err, "took", time.Since(start).Round(time.Millisecond))
	p.release(ctx)
	return u
}

// release closes the router (its handlers end: their writes are done, or were cancelled at the cut),
// then the sinks, the stores the pipeline opened and the PostgreSQL pool. It waits for that until ctx
// ends, and leaves the rest running in the background: the process is exiting, and pgxpool.Close
// alone waits up to 15 s per connection for a server that does not answer.
func (p *Pipeline) release(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.router.Close(); err != nil {
			p.log.Warn("router close", "error", err)
		}
		p.closeSinks()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("sluice: closing the router, the sinks and the pool did not end by the deadline; left running")
	}
}

// closeSinks closes the sinks, the stores the pipeline opened, and the PostgreSQL pool.
// closeSinks closes the sink types the pipeline opened (each closes its sinks, then its connection).
func (p *Pipeline) closeSinks() {
	for name, o := range p.opened {
		if err := o.Close(); err != nil {
			p.log.Warn("close sink", "sink", name, "error", err)
		}
	}
	p.opened = nil
	for _, c := range p.closers {
		_ = c()
	}
	p.closers = nil
}
