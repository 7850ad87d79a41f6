// Package sluice is request/response and application logging for Echo services that never slows a
// request and never floods the database.
//
// An Echo middleware and a log/slog handler (package publishers) turn requests and log records into
// events and hand them, without blocking, to the pipeline, which appends each to an open chunk of
// every route it matches (chunker.go) and publishes each sealed chunk as one message on a bounded
// in-process Watermill pub/sub (package bus). A Watermill router runs one handler per declared route
// (routing.go); it subscribes through a subscribers.BatchSubscriber, so it handles one message per
// write batch, with batch-level middleware (throttle_middleware.go, Watermill's Retry reporting to
// the route's log of failed writes, failure_log.go, breaker_middleware.go) around a
// subscribers.Writer that writes the route's sink: PostgreSQL for warnings and errors
// (subscribers/pgsink), Azure Blob Storage or a local directory for everything (subscribers/blobsink).
//
// This package owns the assembly of that pipeline (Pipeline), the producer side of the bus (chunks),
// the router middleware and the metrics. It is the only package that knows every other; nothing
// below it imports it.
package sluice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/redact"
	"github.com/sluicelog/sluice/subscribers"
)

// Config is sluice's configuration (see package config for every key).
type Config = config.Config

// DefaultConfig returns the embedded defaults: local PostgreSQL, blobs in ./sluice-data/blobs.
func DefaultConfig() Config { return config.Default() }

// LoadConfig reads the defaults, the optional YAML file at path, and the SLUICE_* environment.
func LoadConfig(path string, environ []string) (Config, error) { return config.Load(path, environ) }

// ErrClosed is returned by Publish once the pipeline is closing.
var ErrClosed = errors.New("sluice: pipeline closed")

// Option changes how New builds a pipeline.
type Option func(*options)

type options struct {
	logger *slog.Logger
	// sinkFor, when set, gives each route its sink and write timeout instead of the configured
	// stores (tests).
	sinkFor func(Route) (subscribers.Sink, time.Duration)
}

// WithLogger sets the logger of sluice's own diagnostics (start-up, state changes, errors). Default:
// slog.Default(). It must not be a logger that writes into the same pipeline.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Pipeline is a running sluice: the bus, the router and its routes, the sinks, and the metrics.
// Build it with New, hand Middleware to Echo and Logger to the application, and Close it on shutdown
// after the HTTP server has stopped accepting requests.
type Pipeline struct {
	cfg      Config
	log      *slog.Logger
	wmLogger watermill.LoggerAdapter
	bus      *bus.Bus
	pub      message.Publisher
	router   *message.Router
	routes   []*route
	opened   map[string]subscribers.Opened // the sink types the routes name, opened
	metrics  *metrics
	closers  []func() error // what else the pipeline must close (a sink a test gives it)
	closing  atomic.Bool
	closed   sync.Once
	closeErr error
}

// New builds and starts a pipeline from cfg. It fails on an invalid configuration or a sink that
// cannot be opened at all; an unreachable PostgreSQL is not fatal: its route's events wait in the bus
// (up to its bound) while it is down, and the other routes go on.
func New(ctx context.Context, cfg Config, opts ...Option) (*Pipeline, error) {
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	red, _ := cfg.Redaction.Compile()                               // validated above
	o.logger = slog.New(redact.NewHandler(o.logger.Handler(), red)) // sluice's own lines quote errors and input
	p := &Pipeline{cfg: cfg, log: o.logger.With("component", "sluice")}
	p.wmLogger = newRouterLogger(o.logger.With("component", "sluice.watermill"), &p.closing)
	b, err := bus.New(bus.Config{
		MaxEvents:          cfg.Bus.MaxEvents,
		MaxBytes:           cfg.Bus.MaxBytes,
		OnFull:             bus.Drop,
		MaxInFlight:        cfg.Bus.MaxInFlight,
		RedeliveryDelay:    cfg.Bus.RedeliveryDelay,
		MaxRedeliveryDelay: cfg.Bus.MaxRedeliveryDelay,
		PreserveContext:    true, // carries the event itself to the routes (event.NewContext)
	}, p.wmLogger)
	if err != nil {
		return nil, err
	}
	p.bus, p.pub = b, b.Publisher(bus.Drop)
	p.metrics = newMetrics(b)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout}, p.wmLogger)
	if err != nil {
		return nil, err
	}
	p.router = router
	if err := p.buildRoutes(ctx, o.sinkFor); err != nil {
		p.closeSinks()
		return nil, err
	}
	go func() {
		if err := router.Run(context.Background()); err != nil {
			p.log.Error("router stopped", "error", err)
		}
	}()
	select {
	case <-router.Running():
	case <-ctx.Done():
		_ = router.Close()
		p.closeSinks()
		return nil, ctx.Err()
	}
	return p, nil
}

// buildRoutes opens the sink types the routes name (subscribers.LookupSinkType: each sink package
// registers its own), asks each for its routes' sinks, and adds one handler per route.
func (p *Pipeline) buildRoutes(ctx context.Context, sinkFor func(Route) (subscribers.Sink, time.Duration)) error {
	p.opened = map[string]subscribers.Opened{}
	sections := p.cfg.SinkSections()
	for _, r := range p.cfg.EffectiveRoutes() {
		var (
			sink    subscribers.Sink
			timeout time.Duration
		)
		if sinkFor != nil {
			sink, timeout = sinkFor(r)
		} else {
			o, err := p.open(ctx, r.Sink, sections[r.Sink])
			if err != nil {
				return routeError(r, err)
			}
			if sink, err = o.Sink(subscribers.Route{Name: r.Name, Options: r.Options}); err != nil {
				return routeError(r, err)
			}
			timeout = o.WriteTimeout()
		}
		if err := p.addRoute(r, sink, timeout); err != nil {
			return routeError(r, err)
		}
		p.breakerChanged(r.Name, BreakerClosed, BreakerClosed)
	}
	return nil
}

// open opens a sink type once, the first time a route names it.
func (p *Pipeline) open(ctx context.Context, name string, section any) (subscribers.Opened, error) {
	if o := p.opened[name]; o != nil {
		return o, nil
	}
	t, ok := subscribers.LookupSinkType(name)
	if !ok {
		return nil, fmt.Errorf("unknown sink %q (registered: %v)", name, subscribers.SinkTypeNames())
	}
	o, err := t.Open(ctx, section, p.log.With("sink", name))
	if err != nil {
		return nil, err
	}
	p.opened[name] = o
	return o, nil
}

func (p *Pipeline) breakerChanged(name string, from, to BreakerState) {
	p.metrics.breaker.WithLabelValues(name, p.metrics.sinkOf[name]).Set(float64(to))
	if from != to {
		p.log.Warn("circuit breaker "+to.String(), "route", name, "from", from.String())
	}
}

// Publish hands one event, without blocking, to every route whose filter it matches: it encodes the
// event once and appends it to the route's open chunk (see Route.Chunk), which is published as one bus
// message when it is full or old enough. Each route has its own share of the bus, and its open chunks
// count toward that share: a route that has no room refuses the event at once, and it is counted as
// dropped for that route, by reason (a stuck sink fills only its own share). Publish returns a
// *DropError only when no route took the event; an event that no route wants is counted as unrouted
// and is not an error. Publish keeps e (and sets its Raw, then drops its Request, Response and Attrs,
// which stay in Raw: see event.Lean): the caller must not use it afterwards.
// An event whose Raw is already set (bytes received from elsewhere) is forwarded as those bytes, which
// the routes decode and validate.
func (p *Pipeline) Publish(_ context.Context, e *event.Event) error {
	if p.closing.Load() {
		p.metrics.drop(bus.ReasonClosed, "", 1)
		return &DropError{Why: bus.ReasonClosed, Err: ErrClosed}
	}
	foreign := len(e.Raw) > 0
	line := e.Raw
	matched, accepted := 0, 0
	var lastErr error
	lastReason := ""
	var scratch *[]byte
	for _, r := range p.routes {
		if !r.match(e) {
			continue
		}
		matched++
		if line == nil {
			// Encoded once, into a buffer of this processor's; each route copies the line into
			// its chunk, and e.Raw becomes the first route's copy.
			scratch = encodeBuffers.Get().(*[]byte)
			raw, err := e.AppendJSON((*scratch)[:0])
			if err != nil {
				encodeBuffers.Put(scratch)
				p.metrics.drop(publishers.ReasonPublishError, "", 1)
				return &DropError{Why: publishers.ReasonPublishError, Err: err}
			}
			if len(raw) > p.cfg.Capture.MaxEventBytes {
				fitted, ok := fitEvent(e, raw, p.cfg.Capture.MaxEventBytes)
				if !ok {
					*scratch = raw[:0]
					encodeBuffers.Put(scratch)
					p.metrics.drop(bus.ReasonTooLarge, "", 1)
					return &DropError{Why: bus.ReasonTooLarge, Err: fmt.Errorf("event over capture.max_event_bytes (%d) even without its bodies, headers and attributes", p.cfg.Capture.MaxEventBytes)}
				}
				raw = fitted
			}
			*scratch, line = raw, raw
		}
		if err := r.chunks.add(e, line, foreign); err != nil {
			reason := dropReason(err)
			p.metrics.drop(reason, r.cfg.Name, 1)
			lastErr, lastReason = err, reason
			continue
		}
		accepted++
	}
	if scratch != nil && cap(*scratch) <= maxEncodeBuffer {
		encodeBuffers.Put(scratch)
	}
	switch {
	case matched == 0:
		p.metrics.unrouted.Inc()
		return nil
	case accepted == 0:
		return &DropError{Why: lastReason, Err: lastErr}
	}
	return nil
}

// encodeBuffers hold the encoding of an event while Publish copies it into the routes' chunks.
var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxEncodeBuffer bounds the buffers that go back to encodeBuffers, so that one huge event does not
// pin its memory.
const maxEncodeBuffer = 64 << 10

// DropError says why an event was not accepted; publishers count it by Reason.
type DropError struct {
	Why string // the drop reason: a bus.Reason* or publishers.ReasonPublishError
	Err error
}

func (e *DropError) Error() string { return "sluice: event dropped (" + e.Why + "): " + e.Err.Error() }

// Unwrap returns the cause.
func (e *DropError) Unwrap() error { return e.Err }

// Reason names the drop reason (publishers.DropReason reads it).
func (e *DropError) Reason() string { return e.Why }
