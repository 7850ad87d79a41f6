// Package config owns sluice's configuration: the keys, their defaults, loading them from a YAML file
// and from SLUICE_* environment variables (the same keys in both), and validating them with errors that
// name the key and the bad value. It holds data only: it builds nothing and connects to nothing.
package config

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/redact"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// Config is the whole of sluice's configuration. The zero value is not usable: start from Default().
//
// Every key has a YAML path (postgres.dsn) and an environment variable (SLUICE_POSTGRES_DSN), formed
// from the yaml tags: upper case, dots as underscores, prefixed with SLUICE_.
type Config struct {
	// Service names the service in every event.
	Service string `yaml:"service"`
	// HTTPAddr is where `sluice demo` listens.
	HTTPAddr string `yaml:"http_addr"`
	// AdminAddr, when set, serves /metrics, /healthz and /readyz on a separate listener.
	AdminAddr string `yaml:"admin_addr"`
	// ShutdownTimeout bounds the whole shutdown: finishing the requests in flight, writing what was
	// accepted, and closing the sinks (what would take longer is left behind: the process exits on
	// time, and the events not written by then are counted).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// FailureLogInterval is every route's default Route.FailureLogInterval.
	FailureLogInterval time.Duration `yaml:"failure_log_interval"`

	// The sinks' sections: each sink package owns its settings (keys, defaults, validation).
	Postgres pgsink.Settings   `yaml:"postgres"`
	Blob     blobsink.Settings `yaml:"blob"`
	// Sinks holds the sections of the other registered sink types (subscribers.SinkType.Settings: a
	// pointer to each type's settings), by name: the console's, an embedder's own; and those of the
	// registered broker drivers (brokers.Driver.Settings), by their key, "bus.<driver>".
	Sinks   map[string]any `yaml:"-" env:"-"`
	Bus     Bus            `yaml:"bus"`
	Capture Capture        `yaml:"capture"`
	// Redaction is the one redaction policy of every channel: headers, queries, bodies, errors,
	// application log records and sluice's own logs.
	Redaction redact.Policy `yaml:"redaction"`
	Breaker   Breaker       `yaml:"breaker"`

	// Routes say which events go to which sink with which policies. Empty means DefaultRoutes().
	// Routes come from the YAML file or from Go; there is no environment variable for them.
	Routes []Route `yaml:"routes" env:"-"`
	// RoutesMode says what Routes do to the default routes: "replace" (the default: only Routes run)
	// or "extend" (the default routes run too, but those of the same name as one of Routes).
	RoutesMode string `yaml:"routes_mode"`
}

// Bus configures the in-process bounded bus and, when Driver names a broker, the broker that carries
// the events from the web nodes to the workers (package brokers; each driver's own keys are the
// section bus.<driver>).
type Bus struct {
	// Driver selects the bus: "memory" (the bounded in-process bus: the service writes its own
	// events) or a registered broker driver (kafka, redis, amqp, nats, postgres: the service forwards
	// its events to the broker, and `sluice worker` processes write them).
	Driver string `yaml:"driver"`
	// URL locates the broker (brokers.Driver.URL says what each driver reads: a broker list, a
	// redis://, amqp:// or nats:// URL, a PostgreSQL DSN). Unused with the memory bus.
	URL string `yaml:"url"`
	// Topic carries every event.
	Topic string `yaml:"topic"`
	// Group names the workers' consumer groups: each route reads the topic in the group
	// "<group>.<route>", so that every route gets every chunk and the workers share each route's.
	Group string `yaml:"group"`
	// Forward says how a web node forwards its events to the broker (unused with the memory bus).
	Forward Forward `yaml:"forward"`
	// MaxEvents bounds the events waiting for each route (each subscriber).
	MaxEvents int `yaml:"max_events"`
	// MaxBytes bounds the bytes waiting for each route.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxInFlight bounds the bus messages (chunks of events) handed to each route and not yet
	// acknowledged: a plain bound on what a route holds while it gathers and writes its batches.
	MaxInFlight int `yaml:"max_in_flight"`
	// RedeliveryDelay is the first wait before a failed event is offered again (doubling up to
	// MaxRedeliveryDelay), whoever holds it: a route's batch subscriber hands its failed batch out
	// again whole, a web node's bus offers a chunk whose publish failed again, after this wait.
	RedeliveryDelay    time.Duration `yaml:"redelivery_delay"`
	MaxRedeliveryDelay time.Duration `yaml:"max_redelivery_delay"`
}

// Forward is how a web node forwards events to the broker: it appends every event that some route
// takes to an open chunk (Chunk), publishes each sealed chunk as one broker message, at most
// MaxConcurrentPublishes at once, and removes it from its local bus only once the broker has
// acknowledged it. A failed publish is retried (Retry), then offered again by the local bus after
// bus.redelivery_delay; Breaker stops trying for Cooldown after Failures failed publishes in a row.
// While the broker is down the local bus fills up to its bound, and then drops are counted.
type Forward struct {
	Chunk ChunkPolicy `yaml:"chunk"`
	// Compression compresses each chunk before it is published: s2 (fast), zstd (smaller), or none.
	// The broker then stores, copies and sends a fifth to an eighth of the bytes; workers decompress
	// whatever a message says it holds (its format: event.ChunkFormatFor).
	Compression            string        `yaml:"compression"`
	MaxConcurrentPublishes int           `yaml:"max_concurrent_publishes"`
	PublishTimeout         time.Duration `yaml:"publish_timeout"`
	Retry                  RetryPolicy   `yaml:"retry"`
	Breaker                Breaker       `yaml:"breaker"`
}

// DefaultForward is the forwarding of a web node: chunks of 1,000 events, 512 KiB or 1 s (each becomes
// one broker message, and one archive object per hour on the workers), compressed with s2, 4 publishes
// at once of 10 s at most, 3 attempts, and a breaker that opens after 5 failures for 5 s.
func DefaultForward() Forward {
	return Forward{
		Chunk:                  ChunkPolicy{MaxEvents: 1000, MaxBytes: 512 << 10, Linger: time.Second},
		Compression:            event.EncodingS2,
		MaxConcurrentPublishes: 4,
		PublishTimeout:         10 * time.Second,
		Retry:                  RetryPolicy{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, MaxElapsed: 5 * time.Second},
		Breaker:                Breaker{Failures: 5, Cooldown: 5 * time.Second},
	}
}

// Capture configures what the Echo middleware keeps of each request.
type Capture struct {
	Bodies              bool          `yaml:"bodies"`
	RequestBodyLimit    int           `yaml:"request_body_limit"`
	ResponseBodyLimit   int           `yaml:"response_body_limit"`
	RequestBodyTimeout  time.Duration `yaml:"request_body_timeout"`
	ResponseBodyTimeout time.Duration `yaml:"response_body_timeout"`
	// MaxEventBytes bounds an event's encoding: a larger event loses its bodies' content, then its
	// headers, then its attributes (each marked), and is dropped (reason too_large) only if that is
	// not enough.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// Limits bounds every other captured field (headers, query, path, user agent, error, stack, log
	// message and attributes): see publishers.Limits for the keys.
	Limits publishers.Limits `yaml:",inline"`
	// Sampling keeps a share of the successful requests of chosen routes (rules: route, method, rate).
	Sampling publishers.Sampling `yaml:"sampling"`
	// Levels maps status codes, classes and panics to levels ("5xx": ERROR, "404": INFO).
	Levels publishers.LevelMap `yaml:"levels" env:"-"`
}

// Defaults of Breaker, the one place they are defined (the root package's NewBreaker uses them too).
const (
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 60 * time.Second
)

// Breaker is the default circuit breaker of every route.
type Breaker struct {
	// Failures is how many consecutive failed batch writes open the breaker.
	Failures int `yaml:"failures"`
	// Cooldown is how long the breaker stays open before a trial write.
	Cooldown time.Duration `yaml:"cooldown"`
}

// The values of routes_mode.
const (
	RoutesReplace = "replace"
	RoutesExtend  = "extend"
)

// Sink names of the built-in sink types (more may be registered: subscribers.RegisterSinkType).
const (
	SinkPostgres = pgsink.SinkType
	SinkBlob     = blobsink.SinkType
)

// Route is one declarative route: which events go to which sink, with which policies. Zero fields take
// the defaults of the sink (see DefaultRoutes) or of the config (Breaker).
type Route struct {
	// Name identifies the route in metrics and errors; unique.
	Name string `yaml:"name"`
	// Sink is the name of a registered sink type: "postgres", "blob", "console".
	Sink string `yaml:"sink"`
	// Levels the route takes; empty means every level.
	Levels []string `yaml:"levels"`
	// Kinds the route takes ("http", "app"); empty means both.
	Kinds []string `yaml:"kinds"`
	// Paths are URL path patterns (path.Match syntax, and a trailing "/*" or "*" matches any rest);
	// empty means every path. Events without a path (app events) match only when Paths is empty.
	Paths []string `yaml:"paths"`
	// Options are the sink type's options for this route, which only the sink type reads (a blob
	// route's container and prefix).
	Options map[string]string `yaml:"options"`

	Chunk    ChunkPolicy    `yaml:"chunk"`
	Batch    BatchPolicy    `yaml:"batch"`
	Retry    RetryPolicy    `yaml:"retry"`
	Throttle ThrottlePolicy `yaml:"throttle"`
	Breaker  Breaker        `yaml:"breaker"`

	// FailureLogInterval is the least time between two of the route's log lines about a failed batch
	// write: a failure less than this after the last one logged is counted, not logged, and the next
	// line reports the count (or a summary line does, once the failures have stopped for as long).
	// Zero takes failure_log_interval.
	FailureLogInterval time.Duration `yaml:"failure_log_interval"`
}

// ChunkPolicy says when the publishers' open chunk of a route's events is sealed and published as one
// bus message: at MaxEvents events, at MaxBytes bytes of encoded events, or Linger after its first
// event, whichever comes first. A chunk is the unit the bus, the router and a broker carry; the sink's
// batch gathers several.
type ChunkPolicy struct {
	MaxEvents int           `yaml:"max_events"`
	MaxBytes  int64         `yaml:"max_bytes"`
	Linger    time.Duration `yaml:"linger"`
}

// BatchPolicy says when a batch is written: at MaxEvents events, at MaxBytes bytes, or MaxWait after
// its first event, whichever comes first.
type BatchPolicy = subscribers.BatchPolicy

// RetryPolicy bounds the retries of a batch whose write failed transiently (one retry sequence per
// batch, whatever its size): exponential backoff with jitter from InitialInterval up to MaxInterval, at
// most MaxAttempts attempts in all and no new attempt after MaxElapsed. Then the batch is handed out
// again, the same batch (same events, same id), after bus.redelivery_delay (doubling).
type RetryPolicy struct {
	MaxAttempts     int           `yaml:"max_attempts"`
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	MaxElapsed      time.Duration `yaml:"max_elapsed"`
}

// ThrottlePolicy limits the events per second a route writes, whatever the size of its batches; zero
// means unlimited.
type ThrottlePolicy struct {
	EventsPerSecond float64 `yaml:"events_per_second"`
}

// Default returns the embedded defaults: local PostgreSQL, blobs in ./sluice-data/blobs, a bus of
// 10,000 events or 64 MiB per route, and DefaultRoutes.
func Default() Config {
	return Config{
		Sinks:              registeredSections(),
		RoutesMode:         RoutesReplace,
		Service:            "sluice-demo",
		HTTPAddr:           "127.0.0.1:8080",
		ShutdownTimeout:    30 * time.Second,
		FailureLogInterval: 10 * time.Second,
		Postgres:           pgsink.DefaultSettings(),
		Blob:               blobsink.DefaultSettings(),
		Bus: Bus{
			Driver:             brokers.Memory,
			Topic:              "sluice.events",
			Group:              "sluice",
			Forward:            DefaultForward(),
			MaxEvents:          bus.DefaultMaxEvents,
			MaxBytes:           bus.DefaultMaxBytes,
			MaxInFlight:        bus.DefaultMaxInFlight,
			RedeliveryDelay:    bus.DefaultRedeliveryDelay,
			MaxRedeliveryDelay: bus.DefaultMaxRedeliveryDelay,
		},
		Capture: Capture{
			Bodies:              true,
			RequestBodyLimit:    publishers.DefaultBodyLimit,
			ResponseBodyLimit:   publishers.DefaultBodyLimit,
			RequestBodyTimeout:  publishers.DefaultRequestBodyTimeout,
			ResponseBodyTimeout: publishers.DefaultResponseBodyTimeout,
			MaxEventBytes:       256 << 10,
			Limits:              publishers.DefaultLimits(),
		},
		Breaker: Breaker{Failures: DefaultBreakerFailures, Cooldown: DefaultBreakerCooldown},
	}
}

// registeredSections returns a new default section (a pointer) for every registered sink type that
// declares its settings (subscribers.SinkType.Settings) and is not one of the built-in typed fields,
// and for every registered broker driver that declares its settings (brokers.Driver.Settings), under
// "bus.<driver>".
func registeredSections() map[string]any {
	out := map[string]any{}
	for _, name := range brokers.Names() {
		if d, _ := brokers.Lookup(name); d.Settings != nil {
			out["bus."+name] = d.Settings()
		}
	}
	for _, name := range subscribers.SinkTypeNames() {
		if name == pgsink.SinkType || name == blobsink.SinkType {
			continue
		}
		if t, _ := subscribers.LookupSinkType(name); t.Settings != nil {
			out[name] = t.Settings()
		}
	}
	return out
}

// DefaultRoutes are the design's routes: WARN and ERROR to PostgreSQL, written at 1,000 events or 5 s
// at the latest; every event to the blob archive, at 1,000 events, 16 MiB or 10 s.
func DefaultRoutes() []Route {
	return []Route{
		{
			Name:   "postgres",
			Sink:   SinkPostgres,
			Levels: []string{string(event.LevelWarn), string(event.LevelError)},
			Chunk:  DefaultChunkPolicy(),
			Batch:  BatchPolicy{MaxEvents: 1000, MaxBytes: 8 << 20, MaxWait: 5 * time.Second, MaxConcurrentWrites: 2, MaxEventBytes: 1 << 20},
			Retry:  RetryPolicy{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsed: 10 * time.Second},
		},
		{
			Name:  "blob",
			Sink:  SinkBlob,
			Chunk: DefaultChunkPolicy(),
			Batch: BatchPolicy{MaxEvents: 1000, MaxBytes: 16 << 20, MaxWait: 10 * time.Second, MaxConcurrentWrites: 2, MaxEventBytes: 1 << 20},
			Retry: RetryPolicy{MaxAttempts: 3, InitialInterval: 200 * time.Millisecond, MaxInterval: 5 * time.Second, MaxElapsed: 30 * time.Second},
		},
	}
}

// orDefault sets *v to d when *v is its zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// OtherSinkRoute is the default policy of a route to a sink type that DefaultRoutes does not name
// (console, or one an embedder registers): batches of 1,000 events or 1 s, one write at a time.
func OtherSinkRoute() Route {
	return Route{
		Chunk: DefaultChunkPolicy(),
		Batch: BatchPolicy{MaxEvents: 1000, MaxBytes: 8 << 20, MaxWait: time.Second, MaxConcurrentWrites: 1, MaxEventBytes: 1 << 20},
		Retry: RetryPolicy{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsed: 10 * time.Second},
	}
}

// DefaultChunkPolicy is every route's default chunk: 250 events (four chunks make a default batch),
// 256 KiB, or 50 ms after its first event.
func DefaultChunkPolicy() ChunkPolicy {
	return ChunkPolicy{MaxEvents: 250, MaxBytes: 256 << 10, Linger: 50 * time.Millisecond}
}

// EffectiveRoutes returns the routes with every zero field filled from the sink's default route and
// from the config's breaker.
func (c Config) EffectiveRoutes() []Route {
	routes := c.Routes
	switch {
	case len(routes) == 0:
		routes = DefaultRoutes()
	case c.RoutesMode == RoutesExtend:
		named := map[string]bool{}
		for _, r := range c.Routes {
			named[r.Name] = true
		}
		routes = nil
		for _, r := range DefaultRoutes() {
			if !named[r.Name] {
				routes = append(routes, r)
			}
		}
		routes = append(routes, c.Routes...)
	}
	defaults := map[string]Route{}
	for _, r := range DefaultRoutes() {
		defaults[r.Sink] = r
	}
	out := make([]Route, len(routes))
	for i, r := range routes {
		d, ok := defaults[r.Sink]
		if !ok {
			d = OtherSinkRoute()
		}
		orDefault(&r.Chunk.MaxEvents, d.Chunk.MaxEvents)
		orDefault(&r.Chunk.MaxBytes, d.Chunk.MaxBytes)
		orDefault(&r.Chunk.Linger, d.Chunk.Linger)
		orDefault(&r.Batch.MaxEvents, d.Batch.MaxEvents)
		orDefault(&r.Batch.MaxBytes, d.Batch.MaxBytes)
		orDefault(&r.Batch.MaxWait, d.Batch.MaxWait)
		orDefault(&r.Batch.MaxConcurrentWrites, d.Batch.MaxConcurrentWrites)
		orDefault(&r.Batch.MaxEventBytes, d.Batch.MaxEventBytes)
		orDefault(&r.Retry, d.Retry) // the retry policy is taken whole or not at all
		orDefault(&r.Breaker.Failures, c.Breaker.Failures)
		orDefault(&r.Breaker.Cooldown, c.Breaker.Cooldown)
		orDefault(&r.FailureLogInterval, c.FailureLogInterval)
		out[i] = r
	}
	return out
}

// FieldError is a configuration error that names the key (YAML path and environment variable) and the
// bad value.
type FieldError struct {
	Key   string // YAML path, e.g. bus.max_events or routes[1].batch.max_wait
	Value any
	Msg   string
	// Source says where the value came from: the environment variable that set it, or the file and
	// line; empty for a default (the error then names the variable that would set it).
	Source string
}

func (e *FieldError) Error() string {
	where := ""
	switch {
	case e.Source != "":
		where = " (" + e.Source + ")"
	case !strings.HasPrefix(e.Key, "routes"):
		where = " (default; " + EnvName(e.Key) + " sets it)"
	}
	return fmt.Sprintf("config: %s%s = %v: %s", e.Key, where, e.Value, e.Msg)
}

// EnvName returns the environment variable of a YAML key path: bus.max_events => SLUICE_BUS_MAX_EVENTS.
func EnvName(key string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Validate checks every key and returns all the problems found, joined; each names its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, v any, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Value: v, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Service == "" {
		bad("service", `""`, "must not be empty")
	}
	if c.HTTPAddr == "" {
		bad("http_addr", `""`, "must not be empty")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", c.ShutdownTimeout, "must be positive")
	}
	if c.FailureLogInterval <= 0 {
		bad("failure_log_interval", c.FailureLogInterval, "must be positive")
	}
	if c.RoutesMode != RoutesReplace && c.RoutesMode != RoutesExtend {
		bad("routes_mode", strconv.Quote(c.RoutesMode), "must be %q (only the configured routes) or %q (the default routes too)", RoutesReplace, RoutesExtend)
	}
	for name, section := range c.sections(func(string) bool { return true }) { // sinks' and drivers'
		if v, ok := section.(interface{ Validate() error }); ok {
			errs = append(errs, sectionErrors(name, v.Validate())...)
		}
	}
	if _, ok := brokers.Lookup(c.Bus.Driver); !ok && c.Bus.Driver != brokers.Memory {
		bad("bus.driver", strconv.Quote(c.Bus.Driver), "unknown bus driver (want one of %s; a Go program registers a driver by importing its package, github.com/sluicelog/sluice/brokers/<driver>)",
			strings.Join(append([]string{brokers.Memory}, brokers.Names()...), ", "))
	} else if c.Bus.Driver != brokers.Memory && c.Bus.URL == "" {
		bad("bus.url", `""`, "must locate the %s broker (bus.driver is %q)", c.Bus.Driver, c.Bus.Driver)
	}
	if c.Bus.Topic == "" {
		bad("bus.topic", `""`, "must not be empty")
	}
	if c.Bus.Group == "" {
		bad("bus.group", `""`, "must not be empty")
	}
	errs = append(errs, c.Bus.Forward.validate("bus.forward")...)
	if c.Bus.MaxEvents <= 0 {
		bad("bus.max_events", c.Bus.MaxEvents, "must be positive")
	}
	if c.Bus.MaxBytes <= 0 {
		bad("bus.max_bytes", c.Bus.MaxBytes, "must be positive")
	}
	if c.Bus.MaxInFlight <= 0 {
		bad("bus.max_in_flight", c.Bus.MaxInFlight, "must be positive")
	}
	if c.Bus.RedeliveryDelay <= 0 {
		bad("bus.redelivery_delay", c.Bus.RedeliveryDelay, "must be positive")
	}
	if c.Bus.MaxRedeliveryDelay < c.Bus.RedeliveryDelay {
		bad("bus.max_redelivery_delay", c.Bus.MaxRedeliveryDelay, "must be at least bus.redelivery_delay (%v)", c.Bus.RedeliveryDelay)
	}
	if c.Capture.RequestBodyLimit < 0 {
		bad("capture.request_body_limit", c.Capture.RequestBodyLimit, "must not be negative")
	}
	if c.Capture.ResponseBodyLimit < 0 {
		bad("capture.response_body_limit", c.Capture.ResponseBodyLimit, "must not be negative")
	}
	if c.Capture.RequestBodyTimeout <= 0 {
		bad("capture.request_body_timeout", c.Capture.RequestBodyTimeout, "must be positive")
	}
	if c.Capture.ResponseBodyTimeout <= 0 {
		bad("capture.response_body_timeout", c.Capture.ResponseBodyTimeout, "must be positive")
	}
	if c.Capture.MaxEventBytes < 4096 {
		bad("capture.max_event_bytes", c.Capture.MaxEventBytes, "must be at least 4096")
	} else if c.Bus.Driver != brokers.Memory && c.Capture.MaxEventBytes > event.MaxChunkBytes/2 {
		bad("capture.max_event_bytes", c.Capture.MaxEventBytes, "must be at most %d with a broker (half of what a worker takes in one chunk)", event.MaxChunkBytes/2)
	}
	if err := c.Capture.Sampling.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: capture.sampling: %w", err))
	}
	if err := c.Capture.Levels.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: capture.%w", err))
	}
	if err := c.Capture.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: capture.%w", err))
	}
	if err := c.Redaction.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	if c.Breaker.Failures <= 0 {
		bad("breaker.failures", c.Breaker.Failures, "must be positive")
	}
	if c.Breaker.Cooldown <= 0 {
		bad("breaker.cooldown", c.Breaker.Cooldown, "must be positive")
	}
	errs = append(errs, c.validateRoutes()...)
	return errors.Join(errs...)
}

// validate returns the problems of the forwarding, each naming its key under prefix.
func (f Forward) validate(prefix string) []error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &FieldError{Key: prefix + "." + key, Value: v, Msg: msg})
	}
	if f.Chunk.MaxEvents <= 0 {
		bad("chunk.max_events", f.Chunk.MaxEvents, "must be positive")
	}
	if f.Chunk.MaxBytes <= 0 || f.Chunk.MaxBytes > event.MaxChunkBytes/2 {
		bad("chunk.max_bytes", f.Chunk.MaxBytes, fmt.Sprintf("must be positive and at most %d (a worker refuses a chunk over %d bytes, and an event of up to capture.max_event_bytes may end a chunk past the bound)", event.MaxChunkBytes/2, event.MaxChunkBytes))
	}
	if f.Chunk.Linger <= 0 {
		bad("chunk.linger", f.Chunk.Linger, "must be positive")
	}
	if err := event.CheckEncoding(f.Compression); err != nil {
		bad("compression", f.Compression, "must be none, s2 or zstd")
	}
	if f.MaxConcurrentPublishes <= 0 {
		bad("max_concurrent_publishes", f.MaxConcurrentPublishes, "must be positive")
	}
	if f.PublishTimeout <= 0 {
		bad("publish_timeout", f.PublishTimeout, "must be positive")
	}
	if f.Retry.MaxAttempts <= 0 {
		bad("retry.max_attempts", f.Retry.MaxAttempts, "must be positive")
	}
	if f.Breaker.Failures <= 0 {
		bad("breaker.failures", f.Breaker.Failures, "must be positive")
	}
	if f.Breaker.Cooldown <= 0 {
		bad("breaker.cooldown", f.Breaker.Cooldown, "must be positive")
	}
	return errs
}

func (c Config) validateRoutes() []error {
	var errs []error
	names := map[string]int{}
	for i, r := range c.EffectiveRoutes() {
		key := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			key = fmt.Sprintf("routes[%d](%s)", i, r.Name)
		}
		bad := func(field string, v any, format string, args ...any) {
			errs = append(errs, &FieldError{Key: key + "." + field, Value: v, Msg: fmt.Sprintf(format, args...)})
		}
		if r.Name == "" {
			bad("name", `""`, "must not be empty")
		} else if j, dup := names[r.Name]; dup {
			bad("name", r.Name, "already used by routes[%d]", j)
		}
		names[r.Name] = i
		sections := c.SinkSections()
		if t, ok := subscribers.LookupSinkType(r.Sink); !ok {
			bad("sink", r.Sink, "unknown sink (want one of %s)", strings.Join(subscribers.SinkTypeNames(), ", "))
		} else {
			if e, ok := sections[r.Sink].(interface{ IsEnabled() bool }); ok && !e.IsEnabled() {
				bad("sink", r.Sink, "%s.enabled is false", r.Sink)
			}
			if t.ValidateRoute != nil {
				if err := t.ValidateRoute(sections[r.Sink], subscribers.Route{Name: r.Name, Options: r.Options}); err != nil {
					var se *subscribers.SettingError
					if errors.As(err, &se) {
						bad(se.Key, se.Value, "%s", se.Msg)
					} else {
						bad("options", r.Options, "%v", err)
					}
				}
			}
		}
		for _, l := range r.Levels {
			if _, err := event.ParseLevel(l); err != nil {
				bad("levels", l, "unknown level (want DEBUG, INFO, WARN or ERROR)")
			}
		}
		for _, k := range r.Kinds {
			if _, err := event.ParseKind(k); err != nil {
				bad("kinds", k, "unknown kind (want http or app)")
			}
		}
		for _, p := range r.Paths {
			if _, err := path.Match(p, "/"); err != nil || !strings.HasPrefix(p, "/") {
				bad("paths", p, "not a path pattern (must start with / and be valid path.Match syntax)")
			}
		}
		if len(r.Paths) > 0 && len(r.Kinds) > 0 && !slices.Contains(r.Kinds, string(event.KindHTTP)) {
			bad("paths", r.Paths, "can never match: application logs have no path, and the route takes no HTTP events (kinds)")
		}
		if r.Chunk.MaxEvents <= 0 {
			bad("chunk.max_events", r.Chunk.MaxEvents, "must be positive")
		}
		if r.Chunk.MaxBytes <= 0 {
			bad("chunk.max_bytes", r.Chunk.MaxBytes, "must be positive")
		}
		if r.Chunk.Linger <= 0 {
			bad("chunk.linger", r.Chunk.Linger, "must be positive")
		}
		for _, err := range sectionErrors("batch", r.Batch.Validate()) {
			var fe *FieldError
			if errors.As(err, &fe) {
				bad(fe.Key, fe.Value, "%s", fe.Msg)
			}
		}
		if r.Batch.MaxEventBytes <= 0 {
			bad("batch.max_event_bytes", r.Batch.MaxEventBytes, "must be positive")
		} else if int64(r.Batch.MaxEventBytes) > c.Bus.MaxBytes {
			bad("batch.max_event_bytes", r.Batch.MaxEventBytes, "must not exceed bus.max_bytes (%d)", c.Bus.MaxBytes)
		}
		if r.Retry.MaxAttempts <= 0 {
			bad("retry.max_attempts", r.Retry.MaxAttempts, "must be positive (1 means no retry)")
		}
		if r.Retry.InitialInterval < 0 || r.Retry.MaxInterval < r.Retry.InitialInterval {
			bad("retry.max_interval", r.Retry.MaxInterval, "must be at least retry.initial_interval (%v), both non-negative", r.Retry.InitialInterval)
		}
		if r.Retry.MaxElapsed < 0 {
			bad("retry.max_elapsed", r.Retry.MaxElapsed, "must not be negative (0 means no limit)")
		}
		if r.Throttle.EventsPerSecond < 0 {
			bad("throttle.events_per_second", r.Throttle.EventsPerSecond, "must not be negative")
		}
		if r.Breaker.Failures <= 0 {
			bad("breaker.failures", r.Breaker.Failures, "must be positive")
		}
		if r.Breaker.Cooldown <= 0 {
			bad("breaker.cooldown", r.Breaker.Cooldown, "must be positive")
		}
		if r.FailureLogInterval <= 0 {
			bad("failure_log_interval", r.FailureLogInterval, "must be positive")
		}
	}
	return errs
}

// SinkSections returns every sink type's section of the configuration, by sink type name: what the
// pipeline opens a sink type with. A sink type without a section gets nil.
func (c Config) SinkSections() map[string]any {
	return c.sections(func(name string) bool { return !strings.HasPrefix(name, "bus.") })
}

// BusSettings returns the settings of the configured broker driver (its section bus.<driver>, as
// brokers.Driver.Open takes it), or nil for the memory bus or a driver without settings.
func (c Config) BusSettings() any {
	return c.sections(func(name string) bool { return name == "bus."+c.Bus.Driver })["bus."+c.Bus.Driver]
}

// sections returns the sections whose key keep accepts, by key, as values (not pointers).
func (c Config) sections(keep func(key string) bool) map[string]any {
	sections := map[string]any{}
	if keep(pgsink.SinkType) {
		sections[pgsink.SinkType], sections[blobsink.SinkType] = c.Postgres, c.Blob
	}
	for name, settings := range c.Sinks {
		if keep(name) {
			sections[name] = reflect.ValueOf(settings).Elem().Interface()
		}
	}
	return sections
}

// sectionErrors turns a section's validation errors into FieldErrors whose keys start with the
// section's name.
func sectionErrors(section string, err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var se *subscribers.SettingError
		if errors.As(err, &se) {
			out = append(out, &FieldError{Key: section + "." + se.Key, Value: se.Value, Msg: se.Msg})
			return
		}
		out = append(out, fmt.Errorf("config: %s: %w", section, err))
	}
	walk(err)
	return out
}
