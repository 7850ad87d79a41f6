package sluice_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// Embedding sluice in an Echo service: build the pipeline from a config, use its middleware, log
// through its slog logger, and close it on shutdown (after the HTTP server stopped accepting).
// This example archives to a local directory only; the default config also writes WARN and ERROR
// events to PostgreSQL.
func Example() {
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)

	cfg := sluice.DefaultConfig()
	cfg.Service = "shop"
	cfg.Postgres.Enabled = false
	cfg.Blob.Dir = dir
	cfg.Routes = []sluice.Route{{Name: "archive", Sink: "blob"}}

	quiet := slog.New(slog.DiscardHandler)
	p, err := sluice.New(context.Background(), cfg, sluice.WithLogger(quiet))
	if err != nil {
		fmt.Println(err)
		return
	}
	e := echo.New()
	e.Use(middleware.Recover(), p.Middleware())
	log := p.Logger(nil) // application logs, correlated with the request
	e.GET("/orders/:id", func(c echo.Context) error {
		log.InfoContext(c.Request().Context(), "order shown", "order", c.Param("id"))
		return c.String(http.StatusOK, "order")
	})

	req := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
	req.Header.Set(echo.HeaderXRequestID, "req-1")
	e.ServeHTTP(httptest.NewRecorder(), req)

	if err := p.Close(context.Background()); err != nil { // flushes every accepted event
		fmt.Println(err)
		return
	}

	store, _ := blobsink.NewDirStore(filepath.Join(dir, "logs"))
	names, _ := store.List(context.Background(), "")
	for _, name := range names {
		if blobsink.IsDeadLetter(name) {
			continue
		}
		data, _ := store.Get(context.Background(), name)
		events, _ := blobsink.Decode(data)
		for _, ev := range events {
			fmt.Println(ev.Kind, ev.Level, ev.RequestID, ev.Message)
		}
	}
	// Unordered output:
	// app INFO req-1 order shown
	// http INFO req-1 GET /orders/:id 200
}

// Prune the configured stores to their retention once, as `sluice prune` does (the running pipeline
// does it hourly by itself). (It needs the configured PostgreSQL, so it is compiled, not run.)
func ExamplePrune() {
	cfg := sluice.DefaultConfig()
	cfg.Blob.Retention = 90 * 24 * time.Hour // the archive too (its default is 0: keep)
	reports, err := sluice.Prune(context.Background(), cfg, sluice.PruneOptions{DryRun: true}, slog.Default())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range reports {
		fmt.Printf("%s: %d units before %s\n", r.Sink, len(r.Removed), r.Cutoff.Format(time.RFC3339))
	}
}
