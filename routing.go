package sluice

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
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

// route is one running route: its bus topic and filter, the chunker that publishes its events (none on
// a worker, whose routes read a broker), the
// batch subscriber that gathers them into batches, the writer of its sink, its breaker, and the log
// of its failed writes.
type route struct {
	cfg      Route
	topic    string
	match    func(*event.Event) bool
	sink     subscribers.Sink
	breaker  *Breaker
	chunks   *chunker
	batches  *subscribers.BatchSubscriber
	failures *failureLog
}

// addRoute registers a route as a Watermill handler on the router. The handler subscribes to the
// route's topic through a BatchSubscriber, so the router calls it once per batch (a few chunks of
// events), and its middleware works on whole batches, outermost first: Throttle (events per second),
// Watermill's Retry (one retry sequence per failed batch write) with the route's failure log (one
// line per failed write attempt, at most one per failure_log_interval), the circuit Breaker (counts
// every write attempt), then the Writer that writes the sink.
func (p *Pipeline) addRoute(r Route, sink subscribers.Sink, timeout time.Duration) error {
	if p.role == roleWorker {
		sub, err := p.broker.Subscriber(p.cfg.Bus.Group + "." + r.Name)
		if err != nil {
			return fmt.Errorf("subscribe to the broker in group %s.%s: %w", p.cfg.Bus.Group, r.Name, err)
		}
		return p.addRouteFrom(r, sink, timeout, source{sub: sub, topic: p.cfg.Bus.Topic, oneChunk: true})
	}
	topic := p.cfg.Bus.Topic + "." + r.Name
	return p.addRouteFrom(r, sink, timeout, source{sub: p.bus, topic: topic, chunked: true})
}

// source is where a route's router handler reads its chunks: the bus topic that its own chunker
// publishes to (this process's Publish), or a broker's topic (a worker), one chunk per batch.
type source struct {
	sub      message.Subscriber
	topic    string
	chunked  bool // a chunker publishes the route's events to topic on the bus
	oneChunk bool // subscribers.OneChunkPerBatch
	// match, when set, selects the route's events instead of its levels, kinds and paths (the
	// forward route takes what any configured route takes).
	match func(*event.Event) bool
}

// addRouteFrom is addRoute reading src.
func (p *Pipeline) addRouteFrom(r Route, sink subscribers.Sink, timeout time.Duration, src source) error {
	p.metrics.sinkOf[r.Name] = sink.Name()
	p.metrics.route(r.Name, sink.Name())
	br := NewBreaker(BreakerConfig{Name: r.Name, Failures: r.Breaker.Failures, Cooldown: r.Breaker.Cooldown,
		OnStateChange: p.breakerChanged, OnWait: p.metrics.breakerWaited})
	match := src.match
	if match == nil {
		match = matcher(r)
	}
	var deadLetters subscribers.DeadLetterSink
	if dl, ok := sink.(subscribers.DeadLetterSink); ok {
		deadLetters = dl
	}
	writer, err := subscribers.NewWriter(subscribers.WriterConfig{
		Route:         r.Name,
		Sink:          sink,
		WriteTimeout:  timeout,
		Match:         match, // the chunker filters already; over a broker a message may carry any events
		DeadLetters:   deadLetters,
		MaxEventBytes: r.Batch.MaxEventBytes,
		Observer:      p.metrics,
	})
	if err != nil {
		return err
	}
	// A failed batch waits bus.redelivery_delay (doubling) before it is written again, whoever holds
	// it: the batch subscriber, or (one chunk per batch) the bus or broker it came from.
	opts := []subscribers.BatchOption{subscribers.RedeliverAfter(p.cfg.Bus.RedeliveryDelay, p.cfg.Bus.MaxRedeliveryDelay)}
	if src.oneChunk {
		opts = append(opts, subscribers.OneChunkPerBatch())
	}
	batches, err := subscribers.NewBatchSubscriber(src.sub, r.Batch, opts...)
	if err != nil {
		return err
	}
	if !src.oneChunk {
		p.metrics.batchesOf[r.Name] = batches // sluice_batches_redelivered_total
	}
	topic := src.topic
	h := p.router.AddConsumerHandler("sluice."+r.Name, topic, batches, writer.Handle)
	if r.Throttle.EventsPerSecond > 0 {
		th := NewThrottle(r.Throttle.EventsPerSecond)
		waits := p.metrics.throttleWait.WithLabelValues(r.Name)
		th.onWait = func(d time.Duration) { waits.Observe(d.Seconds()) }
		h.AddMiddleware(th.Middleware)
	}
	var retry *middleware.Retry
	if r.Retry.MaxAttempts > 1 {
		retry = &middleware.Retry{
			MaxRetries:          r.Retry.MaxAttempts - 1,
			InitialInterval:     r.Retry.InitialInterval,
			MaxInterval:         r.Retry.MaxInterval,
			MaxElapsedTime:      r.Retry.MaxElapsed,
			Multiplier:          2,
			RandomizationFactor: 0.5,
			// A permanent error is the data's: the Writer has dead-lettered what it could not store.
			ShouldRetry: func(params middleware.RetryParams) bool { return !subscribers.IsPermanent(params.Err) },
		}
	}
	failures := newFailureLog(r.Name, r.FailureLogInterval, p.log, br)
	h.AddMiddleware(failures.Retry(retry))
	h.AddMiddleware(br.Middleware)
	var chunks *chunker
	if src.chunked {
		chunks = newChunker(topic, p.bus, r.Chunk, func(reason string, n int) { p.metrics.drop(reason, r.Name, n) })
	}
	p.routes = append(p.routes, &route{cfg: r, topic: topic, match: match, sink: sink, breaker: br, chunks: chunks,
		batches: batches, failures: failures})
	return nil
}

func routeError(r Route, err error) error {
	return fmt.Errorf("sluice: route %q (sink %s): %w", r.Name, r.Sink, err)
}

// buildRoutes opens the sink types the routes name (subscribers.LookupSinkType: each sink package
// registers its own), asks each for its routes' sinks, and adds one handler per route.
func (p *Pipeline) buildRoutes(ctx context.Context, sinkFor func(Route) (subscribers.Sink, time.Duration)) error {
	p.opened = map[string]subscribers.Opened{}
	sections := p.cfg.SinkSections()
	for _, r := range p.cfg.EffectiveRoutes() {
		var (
			sink    subscribers.Sink
			timeout time.Duration
		)
		if sinkFor != nil {
			sink, timeout = sinkFor(r)
		} else {
			o, err := p.open(ctx, r.Sink, sections[r.Sink])
			if err != nil {
				return routeError(r, err)
			}
			if sink, err = o.Sink(subscribers.Route{Name: r.Name, Options: r.Options}); err != nil {
				return routeError(r, err)
			}
			timeout = o.WriteTimeout()
		}
		if err := p.addRoute(r, sink, timeout); err != nil {
			return routeError(r, err)
		}
		if len(r.Paths) > 0 && len(r.Kinds) == 0 {
			p.log.Warn("this route's paths match HTTP events only: application logs never reach it (kinds: [http] says so and silences this)",
				"route", r.Name, "paths", r.Paths)
		}
		p.breakerChanged(r.Name, BreakerClosed, BreakerClosed)
	}
	return nil
}

// open opens a sink type once, the first time a route names it.
func (p *Pipeline) open(ctx context.Context, name string, section any) (subscribers.Opened, error) {
	if o := p.opened[name]; o != nil {
		return o, nil
	}
	t, ok := subscribers.LookupSinkType(name)
	if !ok {
		return nil, fmt.Errorf("unknown sink %q (registered: %v)", name, subscribers.SinkTypeNames())
	}
	o, err := t.Open(ctx, section, p.log.With("sink", name))
	if err != nil {
		return nil, err
	}
	p.opened[name] = o
	return o, nil
}

func (p *Pipeline) breakerChanged(name string, from, to BreakerState) {
	p.metrics.breaker.WithLabelValues(name, p.metrics.sinkOf[name]).Set(float64(to))
	if from != to {
		p.log.Warn("circuit breaker "+to.String(), "route", name, "from", from.String())
	}
}
