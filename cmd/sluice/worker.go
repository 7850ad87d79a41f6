package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/labstack/echo/v4"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/app"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/handlers"
	"github.com/sluicelog/sluice/redact"
)

// worker runs a worker until ctx ends: it reads the events that web nodes forward to the broker
// (bus.driver, bus.url) and writes them to the routes' sinks, and serves /metrics, /healthz and /readyz
// on admin_addr (http_addr when admin_addr is empty).
func worker(ctx context.Context, file string, stdout io.Writer, log *slog.Logger) error {
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	red, err := cfg.Redaction.Compile()
	if err != nil {
		return &configError{err}
	}
	log = slog.New(redact.NewHandler(log.Handler(), red))
	log.Info("starting sluice worker", configAttrs(cfg)...)
	w, err := sluice.NewWorker(ctx, cfg, sluice.WithLogger(log))
	if err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			return &configError{err}
		}
		return err
	}
	addr := cfg.AdminAddr
	if addr == "" {
		addr = cfg.HTTPAddr
	}
	e := echo.New()
	handlers.Ops{Metrics: w.MetricsHandler(), Ready: func(context.Context) (bool, any) {
		r := w.Readiness()
		return r.Ready, r
	}}.Register(e)
	srv := &app.Server{Addr: addr, Echo: e, ShutdownTimeout: cfg.ShutdownTimeout, Flush: w.Close, Log: log,
		OnListen: func(a net.Addr) {
			fmt.Fprintf(stdout, "sluice worker reading %s (%s), topic %s; /metrics, /healthz, /readyz on http://%s\n",
				cfg.Bus.Driver, cfg.Redacted().Bus.URL, cfg.Bus.Topic, a)
			for _, r := range w.Routes() {
				fmt.Fprintf(stdout, "  route %-10s group %s.%s -> %s\n", r.Name, cfg.Bus.Group, r.Name, r.Where)
			}
		}}
	if err := srv.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "sluice worker: stopped; what it had not written stays in the broker for the other workers")
	return nil
}
