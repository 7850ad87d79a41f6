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
// below it imports it. It knows sinks only as registered types (subscribers.RegisterSinkType): the
// routes name them, and it opens the ones they name. Its files, by concept:
//
//	sluice.go              New and NewWorker, their options, the Pipeline
//	broker.go              with a broker: a web node's forward route, a worker's routes (package brokers)
//	embed.go               what an Echo service uses: Middleware, Handler, Logger, MetricsHandler
//	publish.go             Publish: encode once, shed what is over the event size, append to chunks
//	chunker.go             the routes' open chunks, sealed into bus messages
//	routing.go             routes: their filters, their sink types opened, their router handlers
//	throttle_middleware.go, breaker_middleware.go, failure_log.go   the batch-level router middleware
//	readiness.go           Routes and Readiness (/readyz)
//	close.go               Close: the drain, the cut at the deadline, the exact count, the release
//	retention.go           the stores pruned to their retention: hourly, and Prune (sluice prune)
//	metrics.go             the Prometheus metrics
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

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
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
	broker  brokers.Broker // WithBroker
}

// WithLogger sets the logger of sluice's own diagnostics (start-up, state changes, errors). Default:
// slog.Default(). It must not be a logger that writes into the same pipeline.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Pipeline is a running sluice: the bus, the router and its routes, the sinks, and the metrics.
// Build it with New, hand Middleware to Echo and Logger to the application, and Close it on shutdown
// after the HTTP server has stopped accepting requests.
type Pipeline struct {
	role      role
	cfg       Config
	log       *slog.Logger
	wmLogger  watermill.LoggerAdapter
	bus       *bus.Bus
	pub       message.Publisher
	router    *message.Router
	routes    []*route
	opened    map[string]subscribers.Opened // the sink types the routes name, opened
	metrics   *metrics
	closers   []func() error // what else the pipeline must close (a sink a test gives it)
	broker    brokers.Broker // a worker's
	retention *retentionLoop // prunes the stores to their retention (retention.go)
	closing   atomic.Bool
	closed    sync.Once
	closeErr  error
}

// New builds and starts a pipeline from cfg. It fails on an invalid configuration or a sink that
// cannot be opened at all; an unreachable PostgreSQL is not fatal: its route's events wait in the bus
// (up to its bound) while it is down, and the other routes go on.
//
// With a broker (bus.driver other than memory, or WithBroker) the pipeline is a web node: it writes
// no sink, and forwards every event that a route takes to the broker (see Config.Bus.Forward), where
// `sluice worker` processes (NewWorker) write them. An unreachable broker is not fatal either: the
// events wait in the bus while it is down.
func New(ctx context.Context, cfg Config, opts ...Option) (*Pipeline, error) {
	p, o, err := newPipeline(cfg, opts)
	if err != nil {
		return nil, err
	}
	if open, name := brokerOpener(cfg, o, p.wmLogger); open != nil {
		p.role = roleForward
		err = p.buildForward(open, name)
	} else {
		err = p.buildRoutes(ctx, o.sinkFor)
	}
	if err != nil {
		p.closeSinks()
		return nil, err
	}
	return p, p.run(ctx)
}

// NewWorker builds and starts a worker: the aggregation tier behind web nodes that forward their
// events to a broker. It reads the broker's topic once per route, each route in its consumer group
// ("<bus.group>.<route>": the workers share each route's chunks, and every route gets every chunk),
// and writes each chunk as one batch to the route's sink, acknowledging it only after the write. A
// chunk not acknowledged (a failed write, a worker killed) is offered again by the broker, and written
// once whichever worker writes it (the sinks' writes are idempotent, and a chunk is always the same
// batch). It needs a broker (bus.driver, or WithBroker). Publish on a worker returns ErrWorker.
func NewWorker(ctx context.Context, cfg Config, opts ...Option) (*Pipeline, error) {
	p, o, err := newPipeline(cfg, opts)
	if err != nil {
		return nil, err
	}
	open, _ := brokerOpener(cfg, o, p.wmLogger)
	if open == nil {
		return nil, &config.FieldError{Key: "bus.driver", Value: cfg.Bus.Driver, Msg: "a worker needs a broker (kafka, redis, amqp, nats or postgres) to read from"}
	}
	p.role = roleWorker
	b, err := open(ctx)
	if err == nil {
		if err = b.Declare(ctx, cfg.Bus.Topic, groups(cfg)); err != nil {
			_ = b.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sluice: worker: %w", err)
	}
	p.broker = b
	if err := p.buildRoutes(ctx, o.sinkFor); err != nil {
		p.closeSinks()
		return nil, err
	}
	return p, p.run(ctx)
}

// newPipeline validates cfg and makes what every role has: the loggers, the bus, the metrics and the
// router.
func newPipeline(cfg Config, opts []Option) (*Pipeline, options, error) {
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, o, err
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
		return nil, o, err
	}
	p.bus, p.pub = b, b.Publisher(bus.Drop)
	p.metrics = newMetrics(b)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.ShutdownTimeout}, p.wmLogger)
	if err != nil {
		return nil, o, err
	}
	p.router = router
	return p, o, nil
}

// run starts the router and waits until it runs: it fails when the router stops first (a
// subscription refused) or ctx ends.
func (p *Pipeline) run(ctx context.Context) error {
	stopped := make(chan error, 1)
	go func() {
		err := p.router.Run(context.Background())
		if err != nil {
			p.log.Error("router stopped", "error", err)
		}
		stopped <- err
	}()
	select {
	case <-p.router.Running():
		p.retention = p.startRetention()
		return nil
	case err := <-stopped:
		p.closeSinks()
		if err == nil {
			err = errors.New("the router stopped at start")
		}
		return fmt.Errorf("sluice: %w", err)
	case <-ctx.Done():
		_ = p.router.Close()
		p.closeSinks()
		return ctx.Err()
	}
}
