package sluice

import (
	"log/slog"
	"net/http"

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
	c.Sampling = p.cfg.Capture.Sampling
	c.Levels = p.cfg.Capture.Levels.Func()
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
