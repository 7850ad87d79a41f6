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
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/redact"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
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
	sinks    []subscribers.Sink
	pool     *pgxpool.Pool
	metrics  *metrics
	closers  []func() error // stores the pipeline opened (the sinks do not own them)
	closing  atomic.Bool
	closed   sync.Once
	closeErr error
	pgStatus atomic.Value // string: why PostgreSQL is not ready, "" when it is
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
	p.pgStatus.Store("")
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

// buildRoutes opens the sinks the routes need and adds one handler per route.
func (p *Pipeline) buildRoutes(ctx context.Context, sinkFor func(Route) (subscribers.Sink, time.Duration)) error {
	blobSinks := map[string]subscribers.Sink{} // by container and prefix
	var pg subscribers.Sink
	for _, r := range p.cfg.EffectiveRoutes() {
		var (
			sink    subscribers.Sink
			timeout time.Duration
		)
		switch {
		case sinkFor != nil:
			sink, timeout = sinkFor(r)
		case r.Sink == config.SinkPostgres:
			if pg == nil {
				s, err := p.openPostgres(ctx)
				if err != nil {
					return routeError(r, err)
				}
				pg = s
			}
			sink, timeout = pg, p.cfg.Postgres.WriteTimeout
		case r.Sink == config.SinkBlob:
			key := r.Container + "/" + r.Prefix
			if blobSinks[key] == nil {
				s, err := p.openBlob(ctx, r)
				if err != nil {
					return routeError(r, err)
				}
				blobSinks[key] = s
			}
			sink, timeout = blobSinks[key], p.cfg.Blob.WriteTimeout
		}
		if err := p.addRoute(r, sink, timeout); err != nil {
			return routeError(r, err)
		}
		p.breakerChanged(r.Name, BreakerClosed, BreakerClosed)
	}
	return nil
}

func (p *Pipeline) openPostgres(ctx context.Context) (subscribers.Sink, error) {
	pcfg, err := pgxpool.ParseConfig(p.cfg.Postgres.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres.dsn: %w", err)
	}
	pcfg.MaxConns = int32(p.cfg.Postgres.MaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg) // connects lazily
	if err != nil {
		return nil, err
	}
	p.pool = pool
	sink, err := pgsink.New(pool, pgsink.Config{WriteTimeout: p.cfg.Postgres.WriteTimeout})
	if err != nil {
		return nil, err
	}
	s := &schemaSink{Sink: sink, pool: pool, migrate: p.cfg.Postgres.Migrate, p: p}
	p.sinks = append(p.sinks, s)
	// Try once now, briefly, so that the start-up log says whether PostgreSQL is there.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.ensure(tctx); err != nil {
		p.log.Warn("PostgreSQL is not reachable: warnings and errors wait in the bus (up to its bound) "+
			"and are written when it is back; the blob archive goes on",
			"dsn", p.cfg.Redacted().Postgres.DSN, "error", err)
	}
	return s, nil
}

// schemaSink makes sure the schema is migrated (when configured) before the first write, so that a
// PostgreSQL that was down at start is set up when it comes back.
type schemaSink struct {
	*pgsink.Sink
	pool    *pgxpool.Pool
	migrate bool
	p       *Pipeline
	mu      sync.Mutex
	ready   bool
}

func (s *schemaSink) ensure(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready {
		return nil
	}
	var err error
	if s.migrate {
		var applied []string
		if applied, err = pgsink.Migrate(ctx, s.pool); err == nil && len(applied) > 0 {
			s.p.log.Info("PostgreSQL schema migrated", "applied", applied)
		}
	} else {
		err = s.pool.Ping(ctx)
	}
	if err != nil {
		s.p.pgStatus.Store(err.Error())
		return err
	}
	s.ready = true
	s.p.pgStatus.Store("")
	return nil
}

func (s *schemaSink) Write(ctx context.Context, b subscribers.Batch) error {
	if err := s.ensure(ctx); err != nil {
		return err
	}
	return s.Sink.Write(ctx, b)
}

func (p *Pipeline) openBlob(ctx context.Context, r Route) (subscribers.Sink, error) {
	var store blobsink.Store
	if p.cfg.Blob.ConnectionString != "" {
		acfg := blobsink.AzureConfig{ConnectionString: p.cfg.Blob.ConnectionString, Container: r.Container}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := blobsink.OpenAzure(tctx, acfg)
		cancel()
		switch {
		case err == nil:
			store = s
			p.closers = append(p.closers, s.Close)
		case !unreachable(err):
			return nil, err // a configuration error: fail at start
		default:
			// Unreachable now: serve anyway, and open it on the first write (the route's events
			// wait in the bus meanwhile, like for any outage).
			p.log.Warn("Azure Blob Storage is not reachable: the archive waits in the bus (up to its bound) "+
				"and is written when it is back", "container", r.Container, "error", err)
			ls := &lazyStore{open: func(ctx context.Context) (*blobsink.AzureStore, error) { return blobsink.OpenAzure(ctx, acfg) }}
			store = ls
			p.closers = append(p.closers, ls.Close)
		}
	} else {
		s, err := blobsink.NewDirStore(filepath.Join(p.cfg.Blob.Dir, r.Container))
		if err != nil {
			return nil, err
		}
		if removed := s.Removed(); len(removed) > 0 {
			p.log.Warn("removed the temporary files of blob writes interrupted by a crash (those writes stored nothing)",
				"dir", s.Dir(), "count", len(removed), "files", removed)
		}
		store = s
	}
	sink, err := blobsink.New(store, blobsink.Config{Prefix: r.Prefix, WriteTimeout: p.cfg.Blob.WriteTimeout, GzipLevel: p.cfg.Blob.GzipLevel})
	if err != nil {
		return nil, err
	}
	p.sinks = append(p.sinks, sink)
	return sink, nil
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

// lazyStore is an Azure store that could not be opened at start: it opens on first use, and tries
// again on every use until it succeeds.
type lazyStore struct {
	open  func(context.Context) (*blobsink.AzureStore, error)
	mu    sync.Mutex
	store *blobsink.AzureStore
}

func (l *lazyStore) get(ctx context.Context) (*blobsink.AzureStore, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store == nil {
		s, err := l.open(ctx)
		if err != nil {
			return nil, err
		}
		l.store = s
	}
	return l.store, nil
}

func (l *lazyStore) Put(ctx context.Context, name string, data []byte, contentType, contentEncoding string) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Put(ctx, name, data, contentType, contentEncoding)
}

func (l *lazyStore) Get(ctx context.Context, name string) ([]byte, error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, name)
}

func (l *lazyStore) List(ctx context.Context, prefix string) ([]string, error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return s.List(ctx, prefix)
}

func (l *lazyStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store != nil {
		return l.store.Close()
	}
	return nil
}

// unreachable reports whether err says that a server did not answer (refused, reset, timed out),
// rather than that it refused what it was asked.
func unreachable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED)
}
