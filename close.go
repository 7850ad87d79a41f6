package sluice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// UndeliveredError is Close's error when some accepted events were not written: the deadline came
// first (Err wraps the context's error), or the bus refused chunks of them (Err says so).
//
// The count is exact, per route: the events the route accepted (Publish appended them to its chunks)
// minus those its sink confirmed written (or kept as dead letters) before the cut at the deadline,
// wherever the others were (an open chunk, the bus, a batch waiting or being written). At the cut the
// writes under way are cancelled through their context; one that ends without an answer is looked
// up in its store (subscribers.Verifier: a store may complete a write whose client gave up) and counts
// as written if it is there. Only the events of writes whose look-up could not end within cutSettle
// are InFlight: a store may hold them although they count as not written.
type UndeliveredError struct {
	// Events is the sum of the routes' NotWritten: an event that two routes accepted counts twice.
	Events int64
	// Routes has one entry per route, in the order of the configuration.
	Routes []RouteUndelivered
	Err    error
}

// RouteUndelivered is one route's part of an UndeliveredError.
type RouteUndelivered struct {
	Route string
	Sink  string
	// Accepted is how many events the route accepted since New.
	Accepted int64
	// NotWritten is how many of them its sink did not confirm written.
	NotWritten int64
	// InFlight is how many of NotWritten were in batches sealed and not settled when the cut settled
	// (writes or look-ups not ended, or writes about to begin): a store may hold some of them.
	InFlight int64
}

func (e *UndeliveredError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice: %d accepted events were not written before shutdown (", e.Events)
	var inFlight int64
	for i, r := range e.Routes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "route %s: %d of %d", r.Route, r.NotWritten, r.Accepted)
		inFlight += r.InFlight
	}
	b.WriteString(")")
	if inFlight > 0 {
		fmt.Fprintf(&b, "; %d of them were in writes under way or waiting at the deadline (a store may hold some of those)", inFlight)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *UndeliveredError) Unwrap() error { return e.Err }

// Close stops accepting events, writes everything accepted (the batches are flushed at once, not at
// their max wait), and releases the sinks, within ctx. Call it after the HTTP server has stopped
// accepting requests. It returns an *UndeliveredError when some accepted event was not written by the
// time ctx ended, and logs the same count (per route) before it closes the sinks. It returns by the
// time ctx ends, plus the moment the cut takes: closing the router, the sinks and the PostgreSQL pool
// is left running in the background when it would take longer (a server that does not answer holds
// pgxpool.Close for pgx's 15 s cancel request). Closing twice returns the first result.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closed.Do(func() {
		p.retention.stop(ctx)
		p.closeErr = p.close(ctx)
	})
	return p.closeErr
}

// cutSettle is how long the cut at a shutdown deadline waits for the writes it cancelled to end and
// to be looked up in their stores (subscribers.DefaultVerifyTimeout, and some): what a shutdown may
// take past its deadline.
const cutSettle = subscribers.DefaultVerifyTimeout + 100*time.Millisecond

func (p *Pipeline) close(ctx context.Context) error {
	start := time.Now()
	p.closing.Store(true)
	if p.role == roleWorker {
		// The chunks a worker has not acknowledged stay in the broker, which offers them to another
		// worker (or to this one when it is back): nothing is lost, and nothing is counted here.
		p.release(ctx)
		p.log.Info("sluice worker closed", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	accepted := make([]int64, len(p.routes))
	for i, r := range p.routes {
		accepted[i] = r.chunks.close() // final: no event is accepted any more, the open chunks are on the bus
		r.batches.Drain()
		r.breaker.Hurry() // an open breaker tries now: storage that is back gets the backlog
	}
	drainErr := p.bus.Drain(ctx)
	inFlight := make([]int, len(p.routes))
	if drainErr != nil {
		// The deadline passed: the cut. The writes still under way or waiting (a slow sink, an open
		// breaker) are cancelled; one that ended without an answer is looked up in its store (a store
		// may complete a write whose client gave up), within cutSettle, so that the count is exact.
		var wg sync.WaitGroup
		for i, r := range p.routes {
			wg.Go(func() { inFlight[i] = r.batches.Cut(cutSettle) })
		}
		wg.Wait()
	}
	_ = p.bus.Close() // ends every route's subscription: what was acknowledged by now is final
	for _, r := range p.routes {
		r.failures.close() // the failures not logged yet: no line is due later
	}
	u := &UndeliveredError{Err: drainErr}
	for i, r := range p.routes {
		ru := RouteUndelivered{Route: r.cfg.Name, Sink: r.sink.Name(), Accepted: accepted[i],
			NotWritten: accepted[i] - p.bus.AckedEvents(r.topic), InFlight: int64(inFlight[i])}
		u.Events += ru.NotWritten
		u.Routes = append(u.Routes, ru)
	}
	if u.Events == 0 {
		p.release(ctx)
		p.log.Info("sluice flushed and closed", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if u.Err == nil {
		u.Err = errors.New("the bus refused chunks of them (see sluice_events_dropped_total)")
	}
	// Said before the sinks are closed: closing them may outlast the deadline, and the process with it.
	routes := make([]any, 0, len(u.Routes))
	for _, r := range u.Routes {
		routes = append(routes, slog.Group(r.Route, "not_written", r.NotWritten, "accepted", r.Accepted, "in_flight", r.InFlight))
	}
	p.log.Error("sluice: accepted events were not written", "not_written", u.Events, slog.Group("route", routes...),
		"cause", u.Err, "took", time.Since(start).Round(time.Millisecond))
	p.release(ctx)
	return u
}

// release closes the router (its handlers end: their writes are done, or were cancelled at the cut),
// then the sinks, the stores the pipeline opened and the PostgreSQL pool. It waits for that until ctx
// ends, and leaves the rest running in the background: the process is exiting, and pgxpool.Close
// alone waits up to 15 s per connection for a server that does not answer.
func (p *Pipeline) release(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.router.Close(); err != nil {
			p.log.Warn("router close", "error", err)
		}
		p.closeSinks()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("sluice: closing the router, the sinks and the pool did not end by the deadline; left running")
	}
}

// closeSinks closes the sink types the pipeline opened (each closes its sinks, then its connection),
// and a worker's broker.
func (p *Pipeline) closeSinks() {
	for name, o := range p.opened {
		if err := o.Close(); err != nil {
			p.log.Warn("close sink", "sink", name, "error", err)
		}
	}
	p.opened = nil
	for _, c := range p.closers {
		_ = c()
	}
	p.closers = nil
	if p.broker != nil {
		if err := p.broker.Close(); err != nil {
			p.log.Warn("close broker", "error", err)
		}
		p.broker = nil
	}
}
