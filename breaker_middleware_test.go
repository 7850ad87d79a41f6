package sluice

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/subscribers"
)

// wrap runs write behind the breaker's middleware, as the router runs a route's handler for a batch
// message.
func wrap(b *Breaker, write func(context.Context, subscribers.Batch) error) func(context.Context, subscribers.Batch) error {
	h := b.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		return nil, write(msg.Context(), subscribers.Batch{})
	})
	return func(ctx context.Context, _ subscribers.Batch) error {
		msg := message.NewMessage("batch", nil)
		msg.SetContext(ctx)
		_, err := h(msg)
		return err
	}
}

// The breaker's tests run in a synctest bubble: its cooldowns are timers on a virtual clock, which
// time.Sleep moves, so nothing depends on the machine's speed.

// shortCtx is a context for a write that must not get through: it ends quickly (on the bubble's clock).
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func TestBreakerOpensAfterConsecutiveFailedWritesAndRecovers(t *testing.T) {
	synctest.Test(t, testBreakerOpensAndRecovers)
}

func testBreakerOpensAndRecovers(t *testing.T) {
	var mu sync.Mutex
	var changes []string
	b := NewBreaker(BreakerConfig{Name: "pg", Failures: 3, Cooldown: time.Minute,
		OnStateChange: func(name string, from, to BreakerState) {
			mu.Lock()
			changes = append(changes, from.String()+">"+to.String())
			mu.Unlock()
		}})
	storage := errors.New("connection refused")
	var calls atomic.Int32
	var failing atomic.Bool
	failing.Store(true)
	write := wrap(b, func(context.Context, subscribers.Batch) error {
		calls.Add(1)
		if failing.Load() {
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
	// Open: the write waits without trying; its context ends first.
	if err := write(shortCtx(t), subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, context.DeadlineExceeded) || calls.Load() != 3 {
		t.Fatalf("write while open: %v, calls %d", err, calls.Load())
	}
	// After the cooldown: one trial; a failed trial opens again for another cooldown.
	time.Sleep(time.Minute - 20*time.Millisecond) // the short context's 20 ms passed already
	if b.State() != BreakerHalfOpen {
		t.Fatalf("state %v after cooldown, want half-open", b.State())
	}
	if err := write(ctx, subscribers.Batch{}); !errors.Is(err, storage) || calls.Load() != 4 {
		t.Fatalf("trial: %v, calls %d", err, calls.Load())
	}
	if err := write(shortCtx(t), subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("after failed trial: %v", err)
	}
	// Storage is back: the next trial closes the breaker.
	failing.Store(false)
	time.Sleep(time.Minute - 20*time.Millisecond)
	if err := write(ctx, subscribers.Batch{}); err != nil {
		t.Fatalf("successful trial: %v", err)
	}
	if b.State() != BreakerClosed {
		t.Fatalf("state %v after a successful trial", b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != len(want) {
		t.Fatalf("state changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("state changes %v, want %v", changes, want)
		}
	}
}

func TestBreakerWaitingWriteGoesThroughAfterTheCooldown(t *testing.T) {
	synctest.Test(t, testBreakerWaitingWrite)
}

func testBreakerWaitingWrite(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 1, Cooldown: 50 * time.Millisecond})
	var calls atomic.Int32
	write := wrap(b, func(context.Context, subscribers.Batch) error {
		if calls.Add(1) == 1 {
			return errors.New("down")
		}
		return nil
	})
	_ = write(context.Background(), subscribers.Batch{})
	start := time.Now()
	if err := write(context.Background(), subscribers.Batch{}); err != nil {
		t.Fatalf("write after cooldown: %v", err)
	}
	if waited := time.Since(start); waited != 50*time.Millisecond {
		t.Fatalf("the write went through after %v, want the cooldown, 50ms", waited)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d attempts: the open breaker let a write try", calls.Load())
	}
}

func TestBreakerIgnoresPermanentErrors(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 2, Cooldown: time.Minute})
	write := wrap(b, func(context.Context, subscribers.Batch) error {
		return subscribers.Permanent(errors.New("invalid byte sequence"))
	})
	for i := 0; i < 5; i++ {
		_ = write(context.Background(), subscribers.Batch{})
	}
	if b.State() != BreakerClosed {
		t.Fatalf("bad data opened the breaker: %v", b.State())
	}
}

func TestBreakerLetsOneTrialAtATime(t *testing.T) {
	synctest.Test(t, testBreakerOneTrial)
}

func testBreakerOneTrial(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 1, Cooldown: time.Second})
	gate := make(chan struct{})
	var calls atomic.Int32
	write := wrap(b, func(context.Context, subscribers.Batch) error {
		if calls.Add(1) == 1 {
			return errors.New("down")
		}
		<-gate
		return nil
	})
	_ = write(context.Background(), subscribers.Batch{})
	time.Sleep(time.Second)
	done := make(chan error)
	go func() { done <- write(context.Background(), subscribers.Batch{}) }()
	synctest.Wait() // the trial is under way: blocked on the gate
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want the trial (2)", calls.Load())
	}
	if err := write(shortCtx(t), subscribers.Batch{}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("second write during the trial: %v, want it to wait", err)
	}
	second := make(chan error)
	go func() { second <- write(context.Background(), subscribers.Batch{}) }()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("a write waiting for the trial must go once it succeeded: %v", err)
	}
}

// At shutdown the pipeline hurries its breakers: a write waiting out an hour's cooldown goes through
// at once as the trial, and a failed trial is followed by another at once (storage that is back gets
// the backlog before the deadline).
func TestBreakerHurryLetsAWaitingWriteTryAtOnce(t *testing.T) {
	synctest.Test(t, testBreakerHurry)
}

func testBreakerHurry(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 1, Cooldown: time.Hour})
	var calls atomic.Int32
	var down atomic.Bool
	down.Store(true)
	write := wrap(b, func(context.Context, subscribers.Batch) error {
		calls.Add(1)
		if down.Load() {
			return errors.New("down")
		}
		return nil
	})
	_ = write(context.Background(), subscribers.Batch{})
	if b.State() != BreakerOpen {
		t.Fatalf("state %v, want open", b.State())
	}
	done := make(chan error, 1)
	go func() { done <- write(context.Background(), subscribers.Batch{}) }()
	time.Sleep(time.Minute) // a minute of the hour's cooldown
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("a write went through an open breaker before Hurry: %v", err)
	default:
	}
	down.Store(false)
	start := time.Now()
	b.Hurry()
	if err := <-done; err != nil {
		t.Fatalf("the hurried trial: %v", err)
	}
	if waited := time.Since(start); waited != 0 {
		t.Fatalf("the hurried write went %v after Hurry, want at once", waited)
	}
	if calls.Load() != 2 || b.State() != BreakerClosed {
		t.Fatalf("%d attempts, state %v: want 2 and closed", calls.Load(), b.State())
	}
	// Hurried, a failed trial opens the breaker and the next write tries at once all the same.
	down.Store(true)
	_ = write(context.Background(), subscribers.Batch{})
	down.Store(false)
	if err := write(context.Background(), subscribers.Batch{}); err != nil || calls.Load() != 4 {
		t.Fatalf("write after a failed hurried trial: %v, %d attempts", err, calls.Load())
	}
}
