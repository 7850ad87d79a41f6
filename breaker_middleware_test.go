package sluice

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestBreakerOpensAfterConsecutiveFailedWritesAndRecovers(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	var changes []string
	b := NewBreaker(BreakerConfig{Name: "pg", Failures: 3, Cooldown: time.Minute, Now: clock.Now,
		OnStateChange: func(name string, from, to BreakerState) { changes = append(changes, from.String()+">"+to.String()) }})
	storage := errors.New("connection refused")
	var calls int
	failing := true
	write := b.Wrap(func(context.Context, subscribers.Batch) error {
		calls++
		if failing {
			return storage
		}
		return nil
	})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		_ = write(ctx, subscribers.Batch{})
	}
	if err := write(ctx, subscribers.Batch{}); !errors.Is(err, storage) {
		t.Fatalf("third write: %v", err)
	}
	if b.State() != BreakerOpen {
		t.Fatalf("state %v after 3 failures, want open", b.State())
	}
	// Open: no write attempt at all.
	if err := write(ctx, subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) || calls != 3 {
		t.Fatalf("write while open: %v, calls %d", err, calls)
	}
	// After the cooldown: one trial; a failed trial opens again for another cooldown.
	clock.Add(time.Minute)
	if b.State() != BreakerHalfOpen {
		t.Fatalf("state %v after cooldown, want half-open", b.State())
	}
	if err := write(ctx, subscribers.Batch{}); !errors.Is(err, storage) || calls != 4 {
		t.Fatalf("trial: %v, calls %d", err, calls)
	}
	if err := write(ctx, subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("after failed trial: %v", err)
	}
	// Storage is back: the next trial closes the breaker.
	failing = false
	clock.Add(time.Minute)
	if err := write(ctx, subscribers.Batch{}); err != nil {
		t.Fatalf("successful trial: %v", err)
	}
	if b.State() != BreakerClosed {
		t.Fatalf("state %v after a successful trial", b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if len(changes) != len(want) {
		t.Fatalf("state changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("state changes %v, want %v", changes, want)
		}
	}
}

func TestBreakerLetsOneTrialAtATime(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	b := NewBreaker(BreakerConfig{Failures: 1, Cooldown: time.Second, Now: clock.Now})
	gate := make(chan struct{})
	first := true
	write := b.Wrap(func(context.Context, subscribers.Batch) error {
		if first {
			first = false
			return errors.New("down")
		}
		<-gate
		return nil
	})
	_ = write(context.Background(), subscribers.Batch{})
	clock.Add(time.Second)
	done := make(chan error)
	go func() { done <- write(context.Background(), subscribers.Batch{}) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		trial := b.trial
		b.mu.Unlock()
		if trial || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := write(context.Background(), subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("second write during the trial: %v, want ErrBreakerOpen", err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
