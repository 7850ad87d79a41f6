package subscribers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/event"
)

// ErrBatcherClosed is returned to messages that arrive after the batcher was closed; they are nacked
// and stay on the bus.
var ErrBatcherClosed = errors.New("subscribers: batcher closed")

// BatchPolicy says when a batch is written: at MaxEvents events, at MaxBytes bytes of encoded events,
// or MaxWait after its first event, whichever comes first. MaxConcurrentWrites bounds the batches being
// written at once; when all are busy the batcher stops taking messages (backpressure onto the bus).
type BatchPolicy struct {
	MaxEvents           int
	MaxBytes            int64
	MaxWait             time.Duration
	MaxConcurrentWrites int
}

// Validate names the first bad field.
func (p BatchPolicy) Validate() error {
	switch {
	case p.MaxEvents <= 0:
		return fmt.Errorf("batch policy: `max_events` (%d) must be positive", p.MaxEvents)
	case p.MaxBytes <= 0:
		return fmt.Errorf("batch policy: `max_bytes` (%d) must be positive", p.MaxBytes)
	case p.MaxWait <= 0:
		return fmt.Errorf("batch policy: `max_wait` (%v) must be positive", p.MaxWait)
	case p.MaxConcurrentWrites <= 0:
		return fmt.Errorf("batch policy: `max_concurrent_writes` (%d) must be positive", p.MaxConcurrentWrites)
	}
	return nil
}

// WriteFunc writes one batch; it is a Sink's Write, possibly wrapped (timeouts, circuit breaker).
type WriteFunc func(ctx context.Context, b Batch) error

// Observer is told what a batcher does, for metrics. Implementations must be cheap and safe for
// concurrent use.
type Observer interface {
	// BatchWritten reports one write attempt of a batch: its size, how long it took and its error.
	BatchWritten(route string, events, bytes int, took time.Duration, err error)
	// Rejected reports events that could not be decoded and were dropped (reason "decode_error").
	Rejected(route, reason string, n int)
}

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Route names the batcher in errors and in what the Observer is told.
	Route  string
	Policy BatchPolicy
	// Write stores a batch; required.
	Write WriteFunc
	// Match selects the events of a message that this route takes; nil takes every event.
	Match func(*event.Event) bool
	// Observer, when set, is told about writes and rejected events.
	Observer Observer
}

// Batcher is a Watermill handler (Handle) that gathers the events of many messages into batches and
// writes each batch with one call. A message is acknowledged only once the batch holding its events
// is written; when the write fails every message of the batch gets the error (and is nacked, so the bus
// offers it again). Because the handler waits for its batch, the subscriber must hand out at least
// Policy.MaxEvents unacknowledged messages at once for a batch to fill (the bounded bus does).
type Batcher struct {
	cfg    BatcherConfig
	in     chan *pending
	drain  chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
	eager  sync.Once
	writes sync.WaitGroup
}

type pending struct {
	events []*event.Event
	bytes  int
	result chan error
}

// NewBatcher starts a batcher; Close stops it.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if cfg.Write == nil {
		return nil, fmt.Errorf("subscribers: invalid config: route %q: Write is required", cfg.Route)
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("subscribers: invalid config: route %q: %w", cfg.Route, err)
	}
	b := &Batcher{
		cfg:   cfg,
		in:    make(chan *pending),
		drain: make(chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go b.run()
	return b, nil
}

// Handle is the Watermill handler function (message.NoPublishHandlerFunc). It returns when the
// message's events are written (nil) or failed to be (the error), or when the message's context ends.
func (b *Batcher) Handle(msg *message.Message) error {
	events, bad := event.Decode(msg.Payload)
	if len(bad) > 0 && b.cfg.Observer != nil {
		b.cfg.Observer.Rejected(b.cfg.Route, "decode_error", len(bad))
	}
	p := &pending{result: make(chan error, 1)}
	for _, e := range events {
		if b.cfg.Match == nil || b.cfg.Match(e) {
			p.events = append(p.events, e)
			p.bytes += len(e.Raw) + 1
		}
	}
	if len(p.events) == 0 {
		return nil // nothing for this route: acknowledge
	}
	ctx := msg.Context()
	select {
	case b.in <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return ErrBatcherClosed
	}
	select {
	case err := <-p.result:
		return err
	case <-ctx.Done():
		// The batch may still be written; the message is offered again and the write is idempotent.
		return ctx.Err()
	}
}

// Drain makes the batcher write what it holds now, and from then on write as soon as no more messages
// are waiting instead of waiting for a batch to fill: used at shutdown so that the bus empties quickly.
func (b *Batcher) Drain() {
	b.eager.Do(func() { close(b.drain) })
}

// Close writes what the batcher holds, waits for the writes under way, and stops. Messages that arrive
// later get ErrBatcherClosed.
func (b *Batcher) Close() error {
	b.closed.Do(func() { close(b.stop) })
	<-b.done
	return nil
}

func (b *Batcher) run() {
	defer close(b.done)
	var (
		cur    []*pending
		events int
		bytes  int64
		eager  bool
		sem    = make(chan struct{}, b.cfg.Policy.MaxConcurrentWrites)
		timer  = time.NewTimer(time.Hour)
		drain  = b.drain
	)
	timer.Stop()
	flush := func() {
		timer.Stop()
		if len(cur) == 0 {
			return
		}
		batch := cur
		cur, events, bytes = nil, 0, 0
		sem <- struct{}{} // at most MaxConcurrentWrites at once: backpressure
		b.writes.Add(1)
		go func() {
			defer func() { <-sem; b.writes.Done() }()
			b.write(batch)
		}()
	}
	for {
		select {
		case p := <-b.in:
			if len(cur) == 0 && !eager {
				timer.Reset(b.cfg.Policy.MaxWait)
			}
			cur = append(cur, p)
			events += len(p.events)
			bytes += int64(p.bytes)
			if events >= b.cfg.Policy.MaxEvents || bytes >= b.cfg.Policy.MaxBytes {
				flush()
			}
		case <-timer.C:
			flush()
		case <-drain:
			eager = true
			drain = nil // a nil channel never fires again
		case <-b.stop:
			flush()
			b.writes.Wait()
			return
		}
		if eager && len(cur) > 0 {
			// Take whatever is ready without waiting, then write.
			for more := true; more && events < b.cfg.Policy.MaxEvents; {
				select {
				case p := <-b.in:
					cur = append(cur, p)
					events += len(p.events)
					bytes += int64(p.bytes)
				default:
					more = false
				}
			}
			flush()
		}
	}
}

// write writes one batch and tells every message of it the outcome. Events that several messages carry
// (a redelivery racing its original) are written once.
func (b *Batcher) write(batch []*pending) {
	seen := make(map[[16]byte]struct{}, len(batch))
	var (
		events []*event.Event
		bytes  int
	)
	for _, p := range batch {
		for _, e := range p.events {
			if _, dup := seen[e.ID]; dup {
				continue
			}
			seen[e.ID] = struct{}{}
			events = append(events, e)
			bytes += len(e.Raw) + 1
		}
	}
	start := time.Now()
	err := b.cfg.Write(context.Background(), NewBatch(events))
	if b.cfg.Observer != nil {
		b.cfg.Observer.BatchWritten(b.cfg.Route, len(events), bytes, time.Since(start), err)
	}
	if err != nil {
		err = fmt.Errorf("route %s: write batch of %d events: %w", b.cfg.Route, len(events), err)
	}
	for _, p := range batch {
		p.result <- err
	}
}
