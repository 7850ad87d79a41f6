// Command embed is an Echo service that embeds sluice: the README quotes this file whole, and CI
// builds it (and checks that the README still quotes it).
//
//	go run . # serves on 127.0.0.1:8081 until Ctrl-C, then flushes its logs
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/publishers"
)

func main() {
	if err := run(); err != nil {
		slog.Error("shop", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := sluice.LoadConfig(os.Getenv("SLUICE_CONFIG"), os.Environ()) // names the bad key
	if err != nil {
		return err
	}
	if os.Getenv("SLUICE_SERVICE") == "" {
		cfg.Service = "shop" // every event says which service it came from
	}
	p, err := sluice.New(ctx, cfg)
	if err != nil {
		return err
	}
	// Application logs: into sluice and to stdout, both with the request's id.
	log := p.Logger(slog.NewJSONHandler(os.Stdout, nil))

	mw := p.MiddlewareConfig()
	mw.Skipper = func(c echo.Context) bool { return c.Path() == "/metrics" || c.Path() == "/healthz" } // probes are not logged
	e := echo.New()
	e.Use(middleware.Recover(), publishers.WithConfig(mw)) // Recover outermost: sluice logs the panic, Recover answers 500
	e.GET("/metrics", echo.WrapHandler(p.MetricsHandler()))
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/orders/:id", func(c echo.Context) error {
		log.InfoContext(c.Request().Context(), "order shown", "order", c.Param("id"))
		return c.JSON(http.StatusOK, map[string]string{"order": c.Param("id")})
	})

	errc := make(chan error, 1)
	go func() { errc <- e.Start("127.0.0.1:8081") }()
	select {
	case <-ctx.Done(): // SIGTERM or Ctrl-C
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	// Stop accepting and finish the requests in flight, then flush every accepted event.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(e.Shutdown(sctx), p.Close(sctx)) // Close: *sluice.UndeliveredError says what was not written
}
