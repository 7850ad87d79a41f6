package sluice

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/subscribers"
)

// ErrBreakerOpen is returned (wrapping the context's error) for a write whose context ended while it
// waited for an open circuit breaker.
var ErrBreakerOpen = errors.New("sluice: circuit breaker open")

// BreakerState is a circuit breaker's state; its value is what sluice_breaker_state exports.
type BreakerState int

// The states of a breaker.
const (
	BreakerClosed   BreakerState = 0 // writes go through
	BreakerHalfOpen BreakerState = 1 // one trial write is let through
	BreakerOpen     BreakerState = 2 // writes fail at once until the cooldown ends
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerConfig configures a Breaker.
type BreakerConfig struct {
	// Name names the breaker (the route) in state changes.
	Name string
	// Failures is how many consecutive failed batch writes open the breaker. Default 5.
	Failures int
	// Cooldown is how long the breaker stays open before it lets one trial write through. Default 60 s.
	Cooldown time.Duration
	// OnStateChange, when set, is called once per state change (outside the breaker's lock).
	OnStateChange func(name string, from, to BreakerState)
	// OnWait, when set, is called once per write attempt with how long it waited for the breaker
	// before it went (or before its context ended): about nothing while the breaker is closed, up to
	// the cooldown while it is open.
	OnWait func(name string, waited time.Duration)
}

// Breaker is a circuit breaker that counts batch writes, not events: it is Watermill handler
// middleware (Middleware) on a route's handler, which the router calls once per batch message (a
// subscribers.BatchSubscriber gathers the bus's chunks into batches), so one failed batch of 1,000
// events is one failure. Only transient failures count (a permanent error is the data's fault: the
// storage answered). Put it inside the Retry middleware, so that every write attempt counts.
//
// While it is open, a write does not fail: it waits, without trying, until the cooldown is over (or
// its context ends). The batch's chunks stay unacknowledged in the bus, the batch subscriber stops
// taking more once its writes are all waiting, and new events wait in the route's share of the bus up
// to its bound and are then dropped and counted: no write attempts, no nacks and no redelivery storm
// (unlike Watermill's CircuitBreaker middleware, which fails and nacks every message at once).
// After the cooldown one trial write goes through (half-open); the others wait for its outcome.
type Breaker struct {
	cfg      BreakerConfig
	mu       sync.Mutex
	state    BreakerState
	failures int
	openedAt time.Time
	trial    bool          // a half-open trial write is under way
	settled  chan struct{} // closed (and replaced) whenever a write's outcome is recorded
	hurry    bool          // Hurry was called: an open breaker does not wait for its cooldown
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = config.DefaultBreakerFailures
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = config.DefaultBreakerCooldown
	}
	return &Breaker{cfg: cfg, settled: make(chan struct{})}
}

// State returns the breaker's state now (an open breaker whose cooldown is over reports half-open).
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && time.Now().Sub(b.openedAt) >= b.cfg.Cooldown {
		return BreakerHalfOpen
	}
	return b.state
}

// Open reports whether the breaker refuses writes now.
func (b *Breaker) Open() bool { return b.State() == BreakerOpen }

// Middleware is the breaker as Watermill handler middleware: h runs only when the breaker allows a
// write, and its outcome is recorded.
func (b *Breaker) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		start := time.Now()
		err := b.allow(msg.Context())
		if b.cfg.OnWait != nil {
			b.cfg.OnWait(b.cfg.Name, time.Since(start))
		}
		if err != nil {
			return nil, err
		}
		msgs, err := h(msg)
		b.record(err)
		return msgs, err
	}
}

// Hurry makes an open breaker let a trial write through at once instead of at the end of its
// cooldown, and again after each failed trial: used at shutdown, so that storage that came back
// during the cooldown gets the backlog before the deadline instead of nothing. Writes still go one
// trial at a time until one succeeds; writes waiting for the cooldown are woken.
func (b *Breaker) Hurry() {
	b.mu.Lock()
	b.hurry = true
	close(b.settled)
	b.settled = make(chan struct{})
	b.mu.Unlock()
}

// allow returns when a write may go: at once while closed; after the cooldown while open (as the one
// trial); after the trial's outcome while half-open. It returns an error wrapping ErrBreakerOpen and
// the context's error when ctx ends first.
func (b *Breaker) allow(ctx context.Context) error {
	for {
		b.mu.Lock()
		from := b.state
		var wait time.Duration
		switch b.state {
		case BreakerClosed:
			b.mu.Unlock()
			return nil
		case BreakerOpen:
			if wait = b.cfg.Cooldown - time.Now().Sub(b.openedAt); wait <= 0 || b.hurry {
				b.state, b.trial = BreakerHalfOpen, true
				b.mu.Unlock()
				b.changed(from, BreakerHalfOpen)
				return nil
			}
		case BreakerHalfOpen:
			if !b.trial {
				b.trial = true
				b.mu.Unlock()
				return nil
			}
			wait = b.cfg.Cooldown // until the trial settles
		}
		settled := b.settled
		b.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w: %w", ErrBreakerOpen, ctx.Err())
		case <-settled:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (b *Breaker) record(err error) {
	if err != nil && subscribers.IsPermanent(err) {
		err = nil // the storage answered: the data was bad, not the storage
	}
	if err != nil && errors.Is(err, ErrBreakerOpen) {
		return
	}
	b.mu.Lock()
	from := b.state
	switch {
	case err == nil:
		b.state, b.failures, b.trial = BreakerClosed, 0, false
	case b.state == BreakerHalfOpen:
		b.state, b.openedAt, b.trial = BreakerOpen, time.Now(), false
	case b.state == BreakerOpen:
		// A write that started before the breaker opened failed late: the cooldown stands.
	default:
		b.failures++
		if b.failures >= b.cfg.Failures {
			b.state, b.openedAt = BreakerOpen, time.Now()
		}
	}
	to := b.state
	close(b.settled)
	b.settled = make(chan struct{})
	b.mu.Unlock()
	b.changed(from, to)
}

func (b *Breaker) changed(from, to BreakerState) {
	if from != to && b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(b.cfg.Name, from, to)
	}
}
