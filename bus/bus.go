// Package bus owns sluice's bounded in-process pub/sub: a Watermill message.Publisher and
// message.Subscriber that sits between the request path and storage, and that holds at most a fixed
// number of events and bytes per subscriber however slow the subscribers and however fast the
// publishers. Memory and goroutines stay flat: one goroutine per subscription, none per message.
//
// What happens at each edge is explicit, documented on the names below, and counted in Stats:
//
//   - Full: each subscriber has its own share of MaxEvents and MaxBytes, so one stuck route cannot
//     stall the others. With Drop, Publish returns ErrFull (a *FullError) at once when no subscriber
//     of the topic had room; with Block, it gives the message to those with room, then waits for
//     room in the others until the message's context ends (so the slowest subscriber paces a Block
//     publisher: that is backpressure). When some subscribers took a message and others had no
//     room, Publish returns nil and each copy not taken is counted as dropped with reason
//     "subscriber_full".
//   - No subscriber: the message is dropped, counted as "no_subscribers", and Publish returns nil,
//     as GoChannel does; with Config.Retain it is kept for the next subscription instead.
//   - In flight: a subscription holds up to MaxInFlight unacked messages, so a batching handler can
//     fill a batch before it acks. A message leaves the bound only when acked; a nack redelivers it
//     after RedeliveryDelay, doubling per nack up to MaxRedeliveryDelay.
//   - Ending: when a subscription's context ends, its channel closes and the messages it had not
//     acked are counted as abandoned (they are not redelivered to anyone). Close stops accepting, closes every
//     subscription and counts what was left; Drain waits until everything accepted is acked.
//
// The bus must not block a Drop publisher, start a goroutine per message, hold anything beyond its
// bounds, or know more about events than their count (event.MetadataEvents). It imports no sluice
// package but event.
package bus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/event"
)

// Bus is a bounded in-process pub/sub. It is a message.Publisher (with Config.OnFull) and a
// message.Subscriber; Publisher returns views with another full-policy. Its methods are safe for
// concurrent use.
//
// A message.Router closes its subscribers when it closes, so a Router that subscribes through the
// bus closes the bus: Drain before closing the Router. Topics are kept for the bus's life.
type Bus struct {
	cfg    Config
	logger watermill.LoggerAdapter

	topics sync.Map // topic name -> *topic; a topic lives as long as the bus

	mu      sync.Mutex // guards subs, and closing against wg.Add
	subs    map[*subscription]struct{}
	closed  atomic.Bool
	closing chan struct{}
	wg      sync.WaitGroup // one per running subscription

	published       atomic.Int64
	publishedEvents atomic.Int64
	dropped         [len(reasons)]atomic.Int64
	droppedEvents   [len(reasons)]atomic.Int64
	redelivered     atomic.Int64
	abandoned       atomic.Int64 // copies left unacked by subscriptions that ended before Close
	leftAtClose     atomic.Int64 // copies left unacked when Close ended their subscriptions
	evicted         atomic.Int64 // Retain: evicted from retention before any subscription took them
	retainedAtClose atomic.Int64 // Retain: still retained at Close, never taken by any subscription
}

var (
	_ message.Publisher  = (*Bus)(nil)
	_ message.Subscriber = (*Bus)(nil)
)

// New returns a running bus. Zero fields of cfg take their defaults; an invalid cfg is an error that
// names the key. A nil logger logs nothing.
func New(cfg Config, logger watermill.LoggerAdapter) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	cfg.setDefaults()
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Bus{
		cfg:     cfg,
		logger:  logger,
		subs:    make(map[*subscription]struct{}),
		closing: make(chan struct{}),
	}, nil
}

// Config returns the configuration in use, defaults filled in.
func (b *Bus) Config() Config { return b.cfg }

// item is one accepted message, shared read-only by every subscriber share and the retention that
// hold it. Each hand-out builds a fresh *message.Message from it, so ack state is per subscriber
// and per delivery.
type item struct {
	uuid    string
	payload message.Payload
	md      message.Metadata // a copy taken at Publish; nil when empty
	ctx     context.Context  // the publisher's context, kept only with PreserveContext
	events  int64
	bytes   int64
	taken   atomic.Bool // Retain: some subscription's share took it
}

// weigh returns what a message counts for against the bounds.
func weigh(m *message.Message) (events, bytes int64) {
	bytes = int64(len(m.Payload))
	for k, v := range m.Metadata {
		bytes += int64(len(k) + len(v))
	}
	return eventCount(m.Metadata), bytes
}

func (b *Bus) newItem(m *message.Message, events, bytes int64) *item {
	it := &item{uuid: m.UUID, payload: m.Payload, events: events, bytes: bytes}
	if len(m.Metadata) > 0 {
		it.md = make(message.Metadata, len(m.Metadata))
		for k, v := range m.Metadata {
			it.md[k] = v
		}
	}
	if b.cfg.PreserveContext {
		it.ctx = m.Context()
	}
	return it
}

// eventCount is the number of events a message carries: its event.MetadataEvents metadata when that
// is a decimal of at least 1, else 1.
func eventCount(md message.Metadata) int64 {
	v, ok := md[event.MetadataEvents]
	if !ok {
		return 1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// topic is the set of subscriptions of one topic name, and its retention (Retain).
type topic struct {
	full     *FullError                      // the error of a message no subscriber had room for (shared: it is immutable)
	mu       sync.Mutex                      // serialises subscription changes; with Retain, publishes too
	subs     atomic.Pointer[[]*subscription] // copy on write: publishers read it without a lock
	retained deque[*item]
	rEvents  int64
	rBytes   int64
}

func (b *Bus) topic(name string) *topic {
	if t, ok := b.topics.Load(name); ok {
		return t.(*topic)
	}
	t, _ := b.topics.LoadOrStore(name, &topic{full: &FullError{Topic: name, Reason: ReasonQueueFull}})
	return t.(*topic)
}

func (t *topic) add(s *subscription) {
	var subs []*subscription
	if old := t.subs.Load(); old != nil {
		subs = append(subs, *old...)
	}
	subs = append(subs, s)
	t.subs.Store(&subs)
}

func (t *topic) remove(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.subs.Load()
	subs := make([]*subscription, 0, len(old))
	for _, o := range old {
		if o != s {
			subs = append(subs, o)
		}
	}
	t.subs.Store(&subs)
}

// anyRoom reports whether some subscription of the topic seems to have room for a message of this
// weight. It reads without locking: Drop uses it to refuse a message without building it, which is
// as if it had published a moment earlier.
func (t *topic) anyRoom(cfg *Config, events, bytes int64) bool {
	p := t.subs.Load()
	if p == nil {
		return false
	}
	for _, s := range *p {
		if s.hasRoom(cfg, events, bytes) {
			return true
		}
	}
	return false
}

// offer gives it to every subscription of the topic that has room, and appends to full those that
// have none. It returns how many took it.
func (t *topic) offer(it *item, full []*subscription) (int, []*subscription) {
	p := t.subs.Load()
	if p == nil {
		return 0, full
	}
	taken := 0
	for _, s := range *p {
		switch r, _ := s.offer(it, false); r {
		case offered:
			taken++
		case noRoom:
			full = append(full, s)
		}
	}
	return taken, full
}

// retain keeps it for future subscriptions, evicting the oldest retained messages beyond the bounds.
// Called with t.mu held.
func (t *topic) retain(b *Bus, it *item) {
	t.retained.push(it)
	t.rEvents += it.events
	t.rBytes += it.bytes
	for t.rEvents > int64(b.cfg.MaxEvents) || t.rBytes > b.cfg.MaxBytes {
		old := t.retained.pop()
		t.rEvents -= old.events
		t.rBytes -= old.bytes
		if !old.taken.Load() {
			b.evicted.Add(1)
		}
	}
}

// Publish publishes msgs to topic in order with the configured full-policy (Config.OnFull). It stops
// at the first message that no subscriber accepted and returns its error: a *FullError
// (errors.Is(err, ErrFull)) or ErrClosed; the messages after it are not published. A message nobody
// subscribes to is dropped (counted as "no_subscribers") without an error, unless Retain keeps it.
//
// The bus keeps each message's UUID, payload and a copy of its metadata; the payload must not be
// modified after Publish. Each subscriber receives its own message.
func (b *Bus) Publish(topic string, msgs ...*message.Message) error {
	return b.publish(topic, b.cfg.OnFull, msgs)
}

// Publisher returns a view of the bus that publishes with policy p (a value other than Drop and
// Block acts as Drop). Closing the view does nothing.
func (b *Bus) Publisher(p FullPolicy) message.Publisher { return publisher{b: b, policy: p} }

type publisher struct {
	b      *Bus
	policy FullPolicy
}

func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, p.policy, msgs)
}

func (p publisher) Close() error { return nil }

func (b *Bus) publish(topic string, policy FullPolicy, msgs []*message.Message) error {
	for _, m := range msgs {
		if err := b.publishOne(topic, policy, m); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bus) publishOne(name string, policy FullPolicy, m *message.Message) error {
	events, bytes := weigh(m)
	if b.closed.Load() {
		b.drop(closed, events, 1)
		return ErrClosed
	}
	if events > int64(b.cfg.MaxEvents) || bytes > b.cfg.MaxBytes {
		b.drop(tooLarge, events, 1)
		return &FullError{Topic: name, Reason: ReasonTooLarge}
	}
	t := b.topic(name)
	if !b.cfg.Retain {
		// The request path's refusals, without building anything.
		if p := t.subs.Load(); p == nil || len(*p) == 0 {
			b.drop(noSubscribers, events, 1)
			return nil
		}
		if policy == Drop && !t.anyRoom(&b.cfg, events, bytes) {
			b.drop(queueFull, events, 1)
			return t.full
		}
	}
	it := b.newItem(m, events, bytes)

	var buf [4]*subscription
	taken, full := 0, buf[:0]
	retained := false
	if b.cfg.Retain {
		t.mu.Lock()
		taken, full = t.offer(it, full)
		// Kept when accepted, or when nobody is there to accept it (yet). Close reads the
		// retention under t.mu after setting closed, so nothing retained escapes its count.
		if taken > 0 || (len(full) == 0 && !b.closed.Load()) {
			t.retain(b, it)
			retained = true
		}
		t.mu.Unlock()
	} else {
		taken, full = t.offer(it, full)
	}

	missed := len(full)
	var cause error // why a Block publisher stopped waiting: the context's error, or ErrClosed
	if missed > 0 && policy == Block {
		var got int
		got, missed, cause = b.waitForRoom(m.Context(), it, full)
		if got > 0 && taken == 0 && b.cfg.Retain {
			t.mu.Lock()
			t.retain(b, it)
			t.mu.Unlock()
			retained = true
		}
		taken += got
	}

	switch {
	case taken > 0 || retained:
		b.published.Add(1)
		b.publishedEvents.Add(it.events)
		if missed > 0 {
			b.drop(subscriberFull, it.events, int64(missed))
		}
		return nil
	case cause == ErrClosed || (missed == 0 && b.closed.Load()):
		b.drop(closed, it.events, 1)
		return ErrClosed
	case missed > 0:
		b.drop(queueFull, it.events, 1)
		if cause == nil {
			return t.full
		}
		return &FullError{Topic: name, Reason: ReasonQueueFull, Err: cause}
	default:
		b.drop(noSubscribers, it.events, 1)
		return nil
	}
}

// waitForRoom offers it to each full subscription in turn, waiting for room until ctx ends or the
// bus closes. It returns how many took it, how many still had no room when it gave up, and why it
// gave up (nil when it did not).
func (b *Bus) waitForRoom(ctx context.Context, it *item, full []*subscription) (got, missed int, cause error) {
	for i, s := range full {
		for cause == nil {
			r, room := s.offer(it, true)
			if r == offered {
				got++
				break
			}
			if r == ended {
				break
			}
			select {
			case <-room:
			case <-s.done:
			case <-ctx.Done():
				cause = ctx.Err()
			case <-b.closing:
				cause = ErrClosed
			}
		}
		if cause != nil {
			// Given up: the others may still have room now.
			for _, s := range full[i:] {
				switch r, _ := s.offer(it, false); r {
				case offered:
					got++
				case noRoom:
					missed++
				}
			}
			return got, missed, cause
		}
	}
	return got, 0, nil
}

func (b *Bus) drop(r reason, events, n int64) {
	b.dropped[r].Add(n)
	b.droppedEvents[r].Add(n * events)
}

// Subscribe returns the messages published to topic from now on (with Retain, first the retained
// ones). The channel closes when ctx ends or the bus closes. Each message must be acked or nacked;
// up to MaxInFlight may be unacked at once.
func (b *Bus) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s := newSubscription(ctx, b)
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		s.cancel()
		return nil, ErrClosed
	}
	b.wg.Add(1)
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	t := b.topic(topic)
	s.topic = t
	t.mu.Lock()
	if b.cfg.Retain {
		s.mu.Lock()
		for i := 0; i < t.retained.len(); i++ {
			it := *t.retained.at(i)
			s.queue.push(it)
			s.add(1, it.events, it.bytes)
			it.taken.Store(true)
		}
		s.mu.Unlock()
	}
	t.add(s)
	t.mu.Unlock()

	b.logger.Debug("Subscribed", watermill.LogFields{"topic": topic})
	go s.run()
	return s.out, nil
}

// Close stops accepting messages, ends every subscription (closing its channel and cancelling the
// contexts of the messages it handed out), and waits for that. It logs how many accepted messages
// were left unacked (see Undelivered) and returns nil; closing again does nothing.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil
	}
	b.closed.Store(true)
	close(b.closing)
	for s := range b.subs {
		s.cancel() // ends s.run
	}
	b.mu.Unlock()

	b.wg.Wait()
	b.topics.Range(func(_, v any) bool {
		t := v.(*topic)
		t.mu.Lock()
		for i := 0; i < t.retained.len(); i++ {
			if !(*t.retained.at(i)).taken.Load() {
				b.retainedAtClose.Add(1)
			}
		}
		t.retained, t.rEvents, t.rBytes = deque[*item]{}, 0, 0
		t.mu.Unlock()
		return true
	})

	fields := watermill.LogFields{
		"undelivered": b.Undelivered(), "published": b.published.Load(), "redelivered": b.redelivered.Load(),
	}
	if b.Undelivered() > 0 {
		b.logger.Error("Bus closed with undelivered messages", nil, fields)
	} else {
		b.logger.Info("Bus closed", fields)
	}
	return nil
}

// Undelivered is how many accepted messages were never acked, counted per subscriber copy: those
// left unacked when their subscription ended (Stats.Abandoned) or when Close ended it, plus, with
// Retain, messages that no subscription ever took (evicted, or still retained at Close). It is final
// once Close has returned.
func (b *Bus) Undelivered() int {
	return int(b.abandoned.Load() + b.leftAtClose.Load() + b.evicted.Load() + b.retainedAtClose.Load())
}

// Drain waits until every message accepted so far has been acked by every subscriber that holds it.
// It does not stop publishers; call it after they have stopped, before Close. When ctx ends first it
// returns an error that wraps ctx's and says how many were still unacked.
func (b *Bus) Drain(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		n := b.depth()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: drain: %d messages not acked: %w", n, ctx.Err())
		case <-tick.C:
		}
	}
}

// depth is the number of accepted messages not yet acked, summed over subscriber shares.
func (b *Bus) depth() int64 {
	var n int64
	b.mu.Lock()
	for s := range b.subs {
		s.mu.Lock()
		n += s.msgs
		s.mu.Unlock()
	}
	b.mu.Unlock()
	return n
}

// Stats is a snapshot of the bus. Gauges are summed over subscribers; counters count from New.
type Stats struct {
	DepthEvents   int64 // events accepted and not yet acked, summed over subscriber shares
	DepthBytes    int64 // the same in bytes
	DepthMessages int64 // the same in messages
	InFlight      int64 // handed out and not yet acked or nacked
	Waiting       int64 // nacked and waiting for redelivery

	Published       int64 // messages accepted by at least one subscriber (or retained), once per message
	PublishedEvents int64 // the events those messages carry

	// Dropped counts what was not accepted, by reason (see the Reason constants): in messages, and
	// for "subscriber_full" in subscriber copies. For every message Publish was given, exactly one of
	// Published, Dropped["queue_full"], ["too_large"], ["no_subscribers"] or ["closed"] counts it.
	Dropped       map[string]int64
	DroppedEvents map[string]int64 // the same in events

	Redelivered int64 // hand-outs of messages that had been nacked
	Abandoned   int64 // copies left unacked by subscriptions whose context ended (before Close)
	Evicted     int64 // Retain: retained messages evicted before any subscription took them
	Retained    int64 // Retain: messages kept for new subscriptions, over all topics
	Subscribers int   // running subscriptions
}

// Stats returns a snapshot; it locks each subscription briefly.
func (b *Bus) Stats() Stats {
	st := Stats{
		Published:       b.published.Load(),
		PublishedEvents: b.publishedEvents.Load(),
		Dropped:         make(map[string]int64, len(reasons)),
		DroppedEvents:   make(map[string]int64, len(reasons)),
		Redelivered:     b.redelivered.Load(),
		Abandoned:       b.abandoned.Load(),
		Evicted:         b.evicted.Load(),
	}
	for i, r := range reasons {
		st.Dropped[r] = b.dropped[i].Load()
		st.DroppedEvents[r] = b.droppedEvents[i].Load()
	}
	b.mu.Lock()
	st.Subscribers = len(b.subs)
	for s := range b.subs {
		s.mu.Lock()
		st.DepthMessages += s.msgs
		st.DepthEvents += s.events
		st.DepthBytes += s.bytes
		s.mu.Unlock()
		st.InFlight += s.inFlight.Load()
		st.Waiting += s.waiting.Load()
	}
	b.mu.Unlock()
	if b.cfg.Retain {
		b.topics.Range(func(_, v any) bool {
			t := v.(*topic)
			t.mu.Lock()
			st.Retained += int64(t.retained.len())
			t.mu.Unlock()
			return true
		})
	}
	return st
}
