package subscribers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

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
	// DeadLettered reports events set aside as dead letters, by reason (the Reason constants).
	DeadLettered(route, reason string, n int)
	// Rejected reports events that could neither be stored nor kept as dead letters (the sink keeps
	// none), by reason: they are dropped.
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
	// DeadLetters keeps what cannot be stored: lines that are not events, events over MaxEventBytes,
	// and events the sink refuses permanently. Nil means they are dropped and counted as Rejected.
	DeadLetters DeadLetterSink
	// MaxEventBytes is the largest encoded event the route stores; larger ones are dead letters
	// (reason "oversize"). Default DefaultMaxEventBytes.
	MaxEventBytes int
	// Observer, when set, is told about writes, dead letters and rejected events.
	Observer Observer
}

// drainWait is how long a draining batcher waits for a batch to fill.
const drainWait = 20 * time.Millisecond

// DefaultMaxEventBytes is the default of BatcherConfig.MaxEventBytes: bodies are capped at 64 KiB
// each by default, so a larger event is a runaway attribute.
const DefaultMaxEventBytes = 1 << 20

// Batcher is a Watermill handler (Handle) that gathers the events of many messages into batches and
// writes each batch with one call. A message is acknowledged only once the batch holding its events
// is written; when the write fails every message of the batch gets the error (and is nacked, so the bus
// offers it again). Because the handler waits for its batch, the subscriber must hand out at least
// Policy.MaxEvents unacknowledged messages at once for a batch to fill (the bounded bus does).
type Batcher struct {
	cfg    BatcherConfig
	ctx    context.Context // the writes' context; Abort cancels it
	abort  context.CancelFunc
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
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	ctx, abort := context.WithCancel(context.Background())
	b := &Batcher{
		cfg:   cfg,
		ctx:   ctx,
		abort: abort,
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
// It takes the events from the message's context when the publisher put them there
// (event.NewContext, in process) and decodes the payload otherwise.
func (b *Batcher) Handle(msg *message.Message) error {
	events, inProcess := event.FromContext(msg.Context())
	var bad []*event.LineError
	if !inProcess {
		events, bad = event.Decode(msg.Payload)
	}
	var letters []DeadLetter
	for _, le := range bad {
		letters = append(letters, DeadLetter{Route: b.cfg.Route, Reason: ReasonDecodeError, Detail: le.Error(), Raw: le.Raw})
	}
	p := &pending{result: make(chan error, 1)}
	for _, e := range events {
		if b.cfg.Match != nil && !b.cfg.Match(e) {
			continue
		}
		if len(e.Raw) > b.cfg.MaxEventBytes {
			letters = append(letters, DeadLetter{ID: e.ID, Route: b.cfg.Route, Reason: ReasonOversize,
				Detail: fmt.Sprintf("event of %d bytes is over the route's limit of %d", len(e.Raw), b.cfg.MaxEventBytes), Raw: e.Raw})
			continue
		}
		p.events = append(p.events, e)
		p.bytes += len(e.Raw) + 1
	}
	if len(letters) > 0 {
		if err := b.deadLetter(msg.Context(), uuid.Nil, letters); err != nil {
			return err // kept on the bus: offered again later
		}
	}
	if len(p.events) == 0 {
		return nil // nothing (more) for this route: acknowledge
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

// Drain makes the batcher write what it holds now, and from then on write a batch at most drainWait
// after its first event instead of Policy.MaxWait: used at shutdown so that the bus empties quickly,
// in batches that still fill when messages keep coming.
func (b *Batcher) Drain() {
	b.eager.Do(func() { close(b.drain) })
}

// Close writes what the batcher holds, waits for the writes under way, and stops. Messages that arrive
// later get ErrBatcherClosed.
func (b *Batcher) Close() error {
	b.closed.Do(func() { close(b.stop) })
	<-b.done
	b.abort()
	return nil
}

// Abort cancels the writes under way and any wait for an open circuit breaker: their messages get
// the context's error (and stay on the bus). Used when a shutdown deadline has passed.
func (b *Batcher) Abort() { b.abort() }

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
			if len(cur) == 0 {
				wait := b.cfg.Policy.MaxWait
				if eager {
					wait = min(wait, drainWait)
				}
				timer.Reset(wait)
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
			if len(cur) > 0 {
				flush()
			}
		case <-b.stop:
			flush()
			b.writes.Wait()
			return
		}
	}
}

// write writes one batch and tells every message of it the outcome. Events that several messages carry
// (a redelivery racing its original) are written once.
func (b *Batcher) write(batch []*pending) {
	seen := make(map[[16]byte]struct{}, len(batch))
	var events []*event.Event
	for _, p := range batch {
		for _, e := range p.events {
			if _, dup := seen[e.ID]; dup {
				continue
			}
			seen[e.ID] = struct{}{}
			events = append(events, e)
		}
	}
	whole := NewBatch(events)
	err := b.writeOnce(whole)
	if IsPermanent(err) {
		err = b.isolate(whole.ID, events, err)
	}
	if err != nil {
		err = fmt.Errorf("route %s: write batch of %d events: %w", b.cfg.Route, len(events), err)
	}
	for _, p := range batch {
		p.result <- err
	}
}

func (b *Batcher) writeOnce(batch Batch) error {
	bytes := 0
	for _, e := range batch.Events {
		bytes += len(e.Raw) + 1
	}
	start := time.Now()
	err := b.cfg.Write(b.ctx, batch)
	if b.cfg.Observer != nil {
		b.cfg.Observer.BatchWritten(b.cfg.Route, len(batch.Events), bytes, time.Since(start), err)
	}
	return err
}

// isolate finds the events that a sink refuses permanently by splitting the batch in halves until
// each refused part is one event, writes every other event, and dead-letters the refused ones. It
// returns nil when every event is stored or dead-lettered, and a transient error (the whole batch is
// then offered again; what was written is not written twice) otherwise.
func (b *Batcher) isolate(batchID uuid.UUID, events []*event.Event, cause error) error {
	var letters []DeadLetter
	var split func(part []*event.Event, err error) error
	split = func(part []*event.Event, err error) error {
		if len(part) == 1 {
			letters = append(letters, DeadLetter{ID: part[0].ID, Route: b.cfg.Route, Reason: ReasonInvalidData,
				Detail: err.Error(), Raw: part[0].Raw})
			return nil
		}
		for _, half := range [][]*event.Event{part[:len(part)/2], part[len(part)/2:]} {
			err := b.writeOnce(NewBatch(half))
			switch {
			case err == nil:
			case IsPermanent(err):
				if err := split(half, err); err != nil {
					return err
				}
			default:
				return err
			}
		}
		return nil
	}
	if err := split(events, cause); err != nil {
		return err
	}
	return b.deadLetter(b.ctx, batchID, letters)
}

// deadLetter keeps letters in the route's dead-letter sink, or counts them as rejected when there is
// none. An error means they were not kept (the messages stay on the bus).
func (b *Batcher) deadLetter(ctx context.Context, batchID uuid.UUID, letters []DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	counts := map[string]int{}
	now := time.Now().UTC()
	for i := range letters {
		letters[i].BatchID = batchID
		letters[i].FailedAt = now
		counts[letters[i].Reason]++
	}
	if b.cfg.DeadLetters == nil {
		if b.cfg.Observer != nil {
			for reason, n := range counts {
				b.cfg.Observer.Rejected(b.cfg.Route, reason, n)
			}
		}
		return nil
	}
	if err := b.cfg.DeadLetters.WriteDeadLetters(ctx, letters); err != nil {
		return fmt.Errorf("route %s: keep %d dead letters: %w", b.cfg.Route, len(letters), err)
	}
	if b.cfg.Observer != nil {
		for reason, n := range counts {
			b.cfg.Observer.DeadLettered(b.cfg.Route, reason, n)
		}
	}
	return nil
}
