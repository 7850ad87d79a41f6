package publishers

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
	"golang.org/x/net/http/httpguts"
)

// Defaults of Config.
const (
	DefaultBodyLimit           = 64 << 10
	DefaultRequestBodyTimeout  = 2 * time.Second
	DefaultResponseBodyTimeout = 3 * time.Second
	// MaxBodyLimit bounds RequestBodyLimit and ResponseBodyLimit: bodies are held in memory per request.
	MaxBodyLimit = 16 << 20
)

// BodyCapture says which bodies the middleware captures. The zero value captures both.
type BodyCapture int

// The body capture modes.
const (
	CaptureAll          BodyCapture = iota // request and response bodies (the default)
	CaptureNone                            // no bodies: sizes only (BytesIn, BytesOut)
	CaptureRequestOnly                     // request bodies only
	CaptureResponseOnly                    // response bodies only
)

func (b BodyCapture) request() bool  { return b == CaptureAll || b == CaptureRequestOnly }
func (b BodyCapture) response() bool { return b == CaptureAll || b == CaptureResponseOnly }

// Config configures the Echo middleware. The zero value of every field but Publisher is usable and
// means the documented default.
type Config struct {
	// Skipper defines a function to skip the middleware (no event, no request id). Default: never skip.
	Skipper middleware.Skipper

	// Publisher receives the events. Required.
	Publisher Publisher

	// Service names the service in every event.
	Service string

	// Levels maps a request's outcome to its level: the status the client received, the error the
	// handler returned (nil if none; for a panic, the panic as an error) and whether it panicked.
	// Default: DefaultLevels (5xx and panics ERROR, 4xx WARN, the rest INFO).
	Levels func(status int, err error, panicked bool) event.Level

	// CaptureBodies says which bodies are captured. Default: CaptureAll.
	CaptureBodies BodyCapture
	// RequestBodyLimit and ResponseBodyLimit cap the bytes of a body kept in an event, up to
	// MaxBodyLimit. Default: DefaultBodyLimit (64 KiB).
	RequestBodyLimit  int
	ResponseBodyLimit int
	// RequestBodyTimeout bounds the time the middleware itself spends reading a request body the handler
	// did not read to its end. Default: DefaultRequestBodyTimeout (2 s).
	RequestBodyTimeout time.Duration
	// ResponseBodyTimeout bounds how long a response body is copied, from its first write: a stream
	// (SSE, chunked) goes on unchanged, but only what was written in this window is kept.
	// Default: DefaultResponseBodyTimeout (3 s).
	ResponseBodyTimeout time.Duration
	// Base64Bodies keeps bodies that are neither JSON nor text as base64. Default: off (size and
	// content type only).
	Base64Bodies bool

	// Redaction says which header, query, body, error and path values are replaced: one policy for
	// every channel. Default: the zero redact.Policy (redact.DefaultKeys, redact.DefaultWords and the
	// value detectors).
	Redaction redact.Policy

	// Limits bounds every other captured field: headers, query, path, user agent, error, stack.
	// Default: DefaultLimits.
	Limits Limits

	// Sampling keeps a share of the successful requests of chosen routes. Default: keep all.
	Sampling Sampling

	// Counters, when set, counts published, dropped and sampled-out events.
	Counters Counters

	// RequestIDHeader is the header of the request id. Default: X-Request-ID (echo.HeaderXRequestID).
	RequestIDHeader string
	// RequestIDGenerator makes a request id for a request that comes without a valid one. Default: the
	// event's id (a UUIDv7).
	RequestIDGenerator func() string
}

// DefaultConfig returns the configuration with every default filled in; set Publisher before use.
func DefaultConfig() Config {
	cfg := Config{}
	cfg.setDefaults()
	return cfg
}

// DefaultLevels is the default level mapping: 5xx and panics ERROR, 4xx WARN, the rest INFO.
func DefaultLevels(status int, _ error, panicked bool) event.Level {
	switch {
	case panicked || status >= 500:
		return event.LevelError
	case status >= 400:
		return event.LevelWarn
	}
	return event.LevelInfo
}

func (cfg *Config) setDefaults() {
	if cfg.Skipper == nil {
		cfg.Skipper = middleware.DefaultSkipper
	}
	if cfg.Levels == nil {
		cfg.Levels = DefaultLevels
	}
	if cfg.RequestBodyLimit == 0 {
		cfg.RequestBodyLimit = DefaultBodyLimit
	}
	if cfg.ResponseBodyLimit == 0 {
		cfg.ResponseBodyLimit = DefaultBodyLimit
	}
	if cfg.RequestBodyTimeout == 0 {
		cfg.RequestBodyTimeout = DefaultRequestBodyTimeout
	}
	if cfg.ResponseBodyTimeout == 0 {
		cfg.ResponseBodyTimeout = DefaultResponseBodyTimeout
	}
	if cfg.RequestIDHeader == "" {
		cfg.RequestIDHeader = echo.HeaderXRequestID
	}
	cfg.Limits = cfg.Limits.WithDefaults()
}

// ErrNoPublisher is the error of a Config without a Publisher.
var ErrNoPublisher = errors.New("`Publisher` is required")

// Validate reports the first problem of the configuration, naming the field and the bad value. Zero
// values are valid (they mean the defaults).
func (cfg Config) Validate() error {
	if cfg.Publisher == nil {
		return ErrNoPublisher
	}
	if cfg.CaptureBodies < CaptureAll || cfg.CaptureBodies > CaptureResponseOnly {
		return fmt.Errorf("`CaptureBodies` (%d) is not a BodyCapture", cfg.CaptureBodies)
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"RequestBodyLimit", cfg.RequestBodyLimit}, {"ResponseBodyLimit", cfg.ResponseBodyLimit}} {
		if l.v < 0 || l.v > MaxBodyLimit {
			return fmt.Errorf("`%s` (%d) must be between 0 and %d", l.name, l.v, MaxBodyLimit)
		}
	}
	if cfg.RequestBodyTimeout < 0 {
		return fmt.Errorf("`RequestBodyTimeout` (%v) must not be negative", cfg.RequestBodyTimeout)
	}
	if cfg.ResponseBodyTimeout < 0 {
		return fmt.Errorf("`ResponseBodyTimeout` (%v) must not be negative", cfg.ResponseBodyTimeout)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return fmt.Errorf("`Limits`: %w", err)
	}
	if cfg.RequestIDHeader != "" && !httpguts.ValidHeaderFieldName(cfg.RequestIDHeader) {
		return fmt.Errorf("`RequestIDHeader` (%q) is not a valid header name", cfg.RequestIDHeader)
	}
	if err := cfg.Redaction.Validate(); err != nil {
		return err
	}
	if _, err := cfg.Sampling.compile(); err != nil {
		return err
	}
	return nil
}

// WithConfig returns the middleware for cfg. It panics when cfg is invalid, like Echo's own
// XxxWithConfig functions; use ToMiddleware to get the error instead.
func WithConfig(cfg Config) echo.MiddlewareFunc {
	mw, err := cfg.ToMiddleware()
	if err != nil {
		panic(err)
	}
	return mw
}

// ToMiddleware returns the middleware for cfg, or an error that names what is wrong with it.
func (cfg Config) ToMiddleware() (echo.MiddlewareFunc, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sluice middleware: invalid config: %w", err)
	}
	cfg.Service = event.SafeString(cfg.Service)
	r, _ := cfg.Redaction.Compile()
	s, _ := cfg.Sampling.compile()
	m := &httpLogger{
		cfg:       cfg,
		redact:    r,
		sample:    s,
		body:      bodyOptions{redact: r, base64: cfg.Base64Bodies},
		reqLimit:  cfg.RequestBodyLimit,
		respLimit: cfg.ResponseBodyLimit,
	}
	if !cfg.CaptureBodies.request() {
		m.reqLimit = 0
	}
	if !cfg.CaptureBodies.response() {
		m.respLimit = 0
	}
	m.requestIDHeader = http.CanonicalHeaderKey(cfg.RequestIDHeader)
	return m.middleware, nil
}
