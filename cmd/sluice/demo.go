package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"gopkg.in/yaml.v3"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/app"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/handlers"
	"github.com/sluicelog/sluice/redact"
)

func loadConfig(file string) (sluice.Config, error) {
	cfg, err := sluice.LoadConfig(file, environ())
	if err != nil {
		return cfg, &configError{err}
	}
	return cfg, nil
}

// demo runs the demo service until ctx ends, then flushes everything accepted. loggingMode is the
// request logging middleware (see demoLogging): "sluice" unless sluice-bench asks for another.
func demo(ctx context.Context, file, loggingMode string, stdout io.Writer, log *slog.Logger) error {
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	red, err := cfg.Redaction.Compile()
	if err != nil {
		return &configError{err}
	}
	log = slog.New(redact.NewHandler(log.Handler(), red)) // the demo's own lines as sluice's: redacted
	log.Info("starting sluice demo", configAttrs(cfg)...)
	p, err := sluice.New(ctx, cfg, sluice.WithLogger(log))
	if err != nil {
		return err
	}
	appLog := p.Logger(log.Handler()) // application logs: into sluice and to stderr

	e := echo.New()
	// Outermost: sluice records the panic with its stack and re-panics into it; Recover then answers
	// 500 as it would without sluice, without printing the stack a second time.
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}))
	mw := p.MiddlewareConfig()
	mw.Skipper = handlers.IsOps
	logging, err := mw.ToMiddleware()
	if err != nil {
		_ = p.Close(ctx)
		return err
	}
	requestLogging, closeRequestLog, err := demoLogging(loggingMode, logging)
	if err != nil {
		_ = p.Close(ctx)
		return err
	}
	if closeRequestLog == nil {
		closeRequestLog = func() error { return nil }
	}
	defer func() { _ = closeRequestLog() }() // when the server did not get as far as its flush
	e.Use(requestLogging...)
	handlers.Demo(e, appLog)
	ops := handlers.Ops{Metrics: p.MetricsHandler(), Ready: func(context.Context) (bool, any) {
		r := p.Readiness()
		return r.Ready, r
	}}
	var admin *echo.Echo
	if cfg.AdminAddr != "" {
		admin = echo.New()
		ops.Register(admin)
	} else {
		ops.Register(e)
	}

	// Once the server has finished its requests: the request log file (its last lines), then sluice.
	flush := func(ctx context.Context) error { return errors.Join(closeRequestLog(), p.Close(ctx)) }
	srv := &app.Server{
		Addr: cfg.HTTPAddr, Echo: e, AdminAddr: cfg.AdminAddr, Admin: admin,
		ShutdownTimeout: cfg.ShutdownTimeout, Flush: flush, Log: log,
		OnListen: func(addr net.Addr) { printWhere(stdout, cfg, p, addr) },
	}
	if err := srv.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "sluice demo: stopped; every accepted event was written")
	return nil
}

// printWhere tells the user where the service listens and where the logs go: every route with what it
// takes, where it writes and how often.
func printWhere(w io.Writer, cfg sluice.Config, p *sluice.Pipeline, addr net.Addr) {
	fmt.Fprintf(w, "sluice demo listening on http://%s  (try /hello, /fail, /panic, /slow?ms=200, POST /echo, POST /login; /metrics, /readyz)\n", addr)
	switch {
	case len(cfg.Routes) == 0:
		fmt.Fprintln(w, "routes (the defaults):")
	case cfg.RoutesMode == config.RoutesExtend:
		fmt.Fprintln(w, "routes (the defaults, extended by the configuration's: routes_mode: extend):")
	default:
		fmt.Fprintln(w, "routes (the configuration's, instead of the defaults: routes_mode: replace):")
	}
	for _, r := range p.Routes() {
		takes := "every level"
		if r.Name == sluice.ForwardRoute { // a web node: it forwards what the workers' routes take
			var names []string
			for _, wr := range cfg.EffectiveRoutes() {
				names = append(names, wr.Name)
			}
			takes = "every event that a worker route takes (" + strings.Join(names, ", ") + ")"
		}
		if len(r.Levels) > 0 {
			takes = strings.Join(r.Levels, ", ")
		}
		if len(r.Kinds) > 0 {
			takes += ", kinds " + strings.Join(r.Kinds, ", ")
		}
		if len(r.Paths) > 0 {
			takes += ", paths " + strings.Join(r.Paths, " ")
		}
		how := fmt.Sprintf("within %v, %d events a batch at most", r.MaxWait, r.Batch)
		if r.Throttle > 0 {
			how += fmt.Sprintf(", %g events/s", r.Throttle)
		}
		fmt.Fprintf(w, "  route %-10s %s -> %s (%s)\n", r.Name, takes, r.Where, how)
	}
	fmt.Fprintln(w, "Ctrl-C flushes everything accepted, then exits.")
}

// configAttrs renders the effective configuration for the start-up log line, secrets masked.
func configAttrs(cfg sluice.Config) []any {
	var attrs []any
	for _, kv := range cfg.Values() {
		attrs = append(attrs, kv.Key, kv.Value)
	}
	for _, r := range cfg.EffectiveRoutes() {
		attrs = append(attrs, "route."+r.Name, fmt.Sprintf("%s levels=%v kinds=%v paths=%v chunk=%d/%dB/%v batch=%d/%dB/%v",
			r.Sink, r.Levels, r.Kinds, r.Paths, r.Chunk.MaxEvents, r.Chunk.MaxBytes, r.Chunk.Linger,
			r.Batch.MaxEvents, r.Batch.MaxBytes, r.Batch.MaxWait))
	}
	return attrs
}

// effective renders the configuration as YAML, secrets masked, with the registered sink types' and
// broker drivers' sections (which the struct does not hold) where they belong: a sink type's at the
// top, a driver's (key "bus.<driver>") inside bus.
func effective(cfg sluice.Config) string {
	r := cfg.Redacted()
	r.Routes = r.EffectiveRoutes()
	var doc yaml.Node
	if err := doc.Encode(r); err != nil {
		return err.Error()
	}
	names := make([]string, 0, len(r.Sinks))
	for name := range r.Sinks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		var section yaml.Node
		if err := section.Encode(r.Sinks[name]); err != nil {
			return err.Error()
		}
		parent, key := &doc, name
		if rest, ok := strings.CutPrefix(name, "bus."); ok {
			parent, key = mappingValue(&doc, "bus"), rest
		}
		if parent != nil {
			parent.Content = append(parent.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &section)
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// mappingValue returns the value of key in the mapping node m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
