// Command embed is an Echo service that embeds sluice the way the README shows: what an embedding
// service pays for sluice (its go.sum, its binary) is measured on it, and CI builds it.
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
)

func main() {
	if err := run(); err != nil {
		slog.Error("embed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := sluice.LoadConfig(os.Getenv("SLUICE_CONFIG"), os.Environ())
	if err != nil {
		return err
	}
	p, err := sluice.New(ctx, cfg)
	if err != nil {
		return err
	}
	log := p.Logger(slog.Default().Handler())

	e := echo.New()
	e.Use(middleware.Recover(), p.Middleware())
	e.GET("/orders/:id", func(c echo.Context) error {
		log.InfoContext(c.Request().Context(), "order shown", "order", c.Param("id"))
		return c.JSON(http.StatusOK, map[string]string{"order": c.Param("id")})
	})
	go func() {
		if err := e.Start("127.0.0.1:8081"); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("server", "error", err)
			stop()
		}
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(e.Shutdown(sctx), p.Close(sctx)) // stop accepting, then flush every event
}
