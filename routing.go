package sluice

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// Route is one declarative route: which events (levels, kinds, path patterns) go to which sink, with
// which batch, retry, throttle and breaker policy. Routes are data: declare them in Go (Config.Routes)
// or in the YAML file (routes:); zero fields take the sink's defaults (DefaultRoutes).
type Route = config.Route

// DefaultRoutes are the design's routes: WARN and ERROR to PostgreSQL (written within 5 s), every
// event to the blob archive (written within 10 s).
func DefaultRoutes() []Route { return config.DefaultRoutes() }

// matcher returns the predicate selecting a route's events.
func matcher(r Route) func(*event.Event) bool {
	levels := map[event.Level]bool{}
	for _, l := range r.Levels {
		lv, _ := event.ParseLevel(l) // validated at start
		levels[lv] = true
	}
	kinds := map[event.Kind]bool{}
	for _, k := range r.Kinds {
		kinds[event.Kind(k)] = true
	}
	paths := append([]string(nil), r.Paths...)
	return func(e *event.Event) bool {
		if len(levels) > 0 && !levels[e.Level] {
			return false
		}
		if len(kinds) > 0 && !kinds[e.Kind] {
			return false
		}
		if len(paths) == 0 {
			return true
		}
		for _, p := range paths {
			if matchPath(p, e.Path) {
				return true
			}
		}
		return false
	}
}

// matchPath matches a URL path against a pattern: path.Match syntax, where a trailing "*" after a
// slash ("/api/*") or at the end ("/api*") matches any rest, slashes included.
func matchPath(pattern, p string) bool {
	if p == "" {
		return false
	}
	if strings.HasSuffix(pattern, "*") {
		prefix := strings.TrimSuffix(pattern, "*")
		if !strings.ContainsAny(prefix, "*?[\\") {
			return strings.HasPrefix(p, prefix)
		}
	}
	ok, _ := path.Match(pattern, p)
	return ok
}

// route is one running route: its bus topic and filter, its batcher, the sink it writes, and its
// breaker.
type route struct {
	cfg     Route
	topic   string
	match   func(*event.Event) bool
	sink    subscribers.Sink
	breaker *Breaker
	batcher *subscribers.Batcher
}

// addRoute builds a route's batcher and registers it as a Watermill handler on the router, with the
// route's own retry and throttle middleware (Watermill's Throttle shares one ticker per instance, so
// each route gets its own instance).
func (p *Pipeline) addRoute(r Route, sink subscribers.Sink, timeout time.Duration) error {
	br := NewBreaker(BreakerConfig{Name: r.Name, Failures: r.Breaker.Failures, Cooldown: r.Breaker.Cooldown,
		OnStateChange: p.breakerChanged})
	write := br.Wrap(func(ctx context.Context, b subscribers.Batch) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return sink.Write(ctx, b)
	})
	match := matcher(r)
	var deadLetters subscribers.DeadLetterSink
	if dl, ok := sink.(subscribers.DeadLetterSink); ok {
		deadLetters = dl
	}
	batcher, err := subscribers.NewBatcher(subscribers.BatcherConfig{
		Route: r.Name,
		Policy: subscribers.BatchPolicy{MaxEvents: r.Batch.MaxEvents, MaxBytes: r.Batch.MaxBytes,
			MaxWait: r.Batch.MaxWait, MaxConcurrentWrites: r.Batch.MaxConcurrentWrites},
		MaxEventBytes: r.Batch.MaxEventBytes,
		DeadLetters:   deadLetters,
		Write:         write,
		// The publisher filters already; over a broker a message may carry events of several routes.
		Match:    match,
		Observer: p.metrics,
	})
	if err != nil {
		return err
	}
	topic := p.cfg.Bus.Topic + "." + r.Name
	h := p.router.AddNoPublisherHandler("sluice."+r.Name, topic, p.bus, batcher.Handle)
	if r.Retry.MaxAttempts > 1 {
		h.AddMiddleware(middleware.Retry{
			MaxRetries:          r.Retry.MaxAttempts - 1,
			InitialInterval:     r.Retry.InitialInterval,
			MaxInterval:         r.Retry.MaxInterval,
			MaxElapsedTime:      r.Retry.MaxElapsed,
			Multiplier:          2,
			RandomizationFactor: 0.5,
			// An open breaker fails at once; waiting for it is the bus's redelivery, not a retry.
			ShouldRetry: func(params middleware.RetryParams) bool { return !subscribers.IsPermanent(params.Err) },
			OnRetryHook: func(int, time.Duration) { p.metrics.retries.WithLabelValues(r.Name).Inc() },
			Logger:      p.wmLogger,
		}.Middleware)
	}
	if r.Throttle.EventsPerSecond > 0 {
		h.AddMiddleware(middleware.NewThrottle(1, time.Duration(float64(time.Second)/r.Throttle.EventsPerSecond)).Middleware)
	}
	p.routes = append(p.routes, &route{cfg: r, topic: topic, match: match, sink: sink, breaker: br, batcher: batcher})
	return nil
}

func routeError(r Route, err error) error {
	return fmt.Errorf("sluice: route %q (sink %s): %w", r.Name, r.Sink, err)
}
