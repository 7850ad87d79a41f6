package sluice

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// ErrBreakerOpen is returned for a write that the circuit breaker refused without trying it.
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
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Breaker is a circuit breaker that counts batch writes, not messages: it sits between a route's
// batcher and its sink (Wrap), so one failed batch of 1,000 events is one failure. While it is open,
// writes fail at once with ErrBreakerOpen, the batch's messages are nacked, and the bus offers them
// again after its redelivery delay (with backoff): no write attempts and no redelivery storm, unlike
// Watermill's per-message CircuitBreaker middleware.
type Breaker struct {
	cfg      BreakerConfig
	mu       sync.Mutex
	state    BreakerState
	failures int
	openedAt time.Time
	trial    bool // a half-open trial write is under way
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = 5
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 60 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breaker{cfg: cfg}
}

// State returns the breaker's state now (an open breaker whose cooldown is over reports half-open).
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && b.cfg.Now().Sub(b.openedAt) >= b.cfg.Cooldown {
		return BreakerHalfOpen
	}
	return b.state
}

// Open reports whether the breaker refuses writes now.
func (b *Breaker) Open() bool { return b.State() == BreakerOpen }

// Wrap returns write guarded by the breaker.
func (b *Breaker) Wrap(write subscribers.WriteFunc) subscribers.WriteFunc {
	return func(ctx context.Context, batch subscribers.Batch) error {
		if err := b.allow(); err != nil {
			return err
		}
		err := write(ctx, batch)
		b.record(err)
		return err
	}
}

func (b *Breaker) allow() error {
	b.mu.Lock()
	from := b.state
	switch b.state {
	case BreakerOpen:
		if b.cfg.Now().Sub(b.openedAt) < b.cfg.Cooldown {
			b.mu.Unlock()
			return ErrBreakerOpen
		}
		b.state, b.trial = BreakerHalfOpen, true
	case BreakerHalfOpen:
		if b.trial {
			b.mu.Unlock()
			return ErrBreakerOpen
		}
		b.trial = true
	}
	to := b.state
	b.mu.Unlock()
	b.changed(from, to)
	return nil
}

func (b *Breaker) record(err error) {
	b.mu.Lock()
	from := b.state
	switch {
	case err == nil:
		b.state, b.failures, b.trial = BreakerClosed, 0, false
	case b.state == BreakerHalfOpen:
		b.state, b.openedAt, b.trial = BreakerOpen, b.cfg.Now(), false
	default:
		b.failures++
		if b.failures >= b.cfg.Failures {
			b.state, b.openedAt = BreakerOpen, b.cfg.Now()
		}
	}
	to := b.state
	b.mu.Unlock()
	b.changed(from, to)
}

func (b *Breaker) changed(from, to BreakerState) {
	if from != to && b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(b.cfg.Name, from, to)
	}
}
