package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// eventsStart is the time of the first generated event: fixed, so that every design writes the same
// content (sinktest.Events depends only on the count and this time; only the ids differ), and early in
// an hour, so that no blob batch is split at an hour boundary.
var eventsStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// generate returns n realistic events (about 1.1 KB of JSON each, three HTTP events per application
// event), with fresh ids.
func generate(n int) []*event.Event { return sinktest.Events(n, eventsStart) }

// pipelineRun is what publishing events through a sluice pipeline measured.
type pipelineRun struct {
	cost    cost
	metrics metrics // the pipeline's own, after Close
}

// runPipeline starts a pipeline from cfg, publishes events as fast as it takes them, and closes it,
// which writes everything accepted. On a full bus the producer waits briefly and offers the same event
// again, so that every event is accepted and written: the time is the pipeline's throughput, from the
// first Publish until Close returned.
func runPipeline(ctx context.Context, cfg sluice.Config, events []*event.Event, pr *progress) (pipelineRun, error) {
	var run pipelineRun
	p, err := sluice.New(ctx, cfg, sluice.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return run, err
	}
	defer p.Close(context.Background()) // a no-op after the Close below; closes on an early return
	runtime.GC()
	var published atomic.Int64
	stop := pr.every(5*time.Second, func() string {
		return fmt.Sprintf("%d of %d events published", published.Load(), len(events))
	})
	m := startMeasure()
	for i, e := range events {
		for {
			err := p.Publish(ctx, e)
			if err == nil {
				break
			}
			var drop *sluice.DropError
			if !errors.As(err, &drop) || drop.Reason() != bus.ReasonQueueFull {
				stop()
				return run, fmt.Errorf("publish event %d: %w", i, err)
			}
			if err := ctx.Err(); err != nil {
				stop()
				return run, err
			}
			time.Sleep(200 * time.Microsecond)
		}
		published.Add(1)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = p.Close(cctx)
	run.cost = m.done()
	stop()
	if err != nil {
		return run, fmt.Errorf("close: %w", err)
	}
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	run.metrics, err = parseMetrics(rec.Body)
	return run, err
}

// routeConfig is the default configuration with one route, named after its sink and taking every
// event to it, with that sink's default batch policy.
func routeConfig(sink string) sluice.Config {
	cfg := sluice.DefaultConfig()
	cfg.Service = "bench"
	cfg.Routes = []sluice.Route{{Name: sink, Sink: sink}}
	return cfg
}
