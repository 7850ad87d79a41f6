// Package bus owns sluice's bounded in-process pub/sub: a Watermill message.Publisher and
// message.Subscriber that sits between the request path and storage, and that holds at most a fixed
// number of events and bytes per subscriber however slow the subscribers and however fast the
// publishers. Memory and goroutines stay flat: one goroutine per subscription, none per message.
// A message is usually a chunk of many events (its event.MetadataEvents), so that the router, its
// middleware and a broker work per chunk.
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
//   - Reservations: a producer that collects events into a chunk reserves room for each event as
//     it comes (Reserve: a few atomic operations, no lock, refused at once when there is no room),
//     then publishes the chunk under the sum of its reservations (PublishReserved, which never waits)
//     or gives them back (Unreserve). Reserved room counts against every share of the topic as if it
//     were queued there, so the events of open chunks are within the bound before their message
//     exists; Stats.ReservedEvents shows them, and a refused reservation counts its events in
//     Stats.DroppedEvents.
//   - No subscriber: the message is dropped, counted as "no_subscribers", and Publish returns nil,
//     as GoChannel does; with Config.Retain it is kept for the next subscription instead.
//   - In flight: a subscription holds up to MaxInFlight unacked messages, so a batching handler can
//     fill a batch before it acks. A message leaves the bound only when acked; a nack redelivers it
//     after RedeliveryDelay, doubling per nack up to MaxRedeliveryDelay. The subscription's
//     goroutine waits on the ack of its oldest unsettled message only, and when that one settles,
//     takes in every later one already acked or nacked: acks are seen in hand-out order, without
//     polling. A message acked before an older one keeps its room and window slot until the older
//     one is acked or nacked, and nacked messages are scheduled for redelivery in hand-out order
//     (their delay counts from then). Consumers that ack in order, as a batching one does, lose
//     nothing by it.
//   - Ending: when a subscription's context ends, its channel closes and the messages it had not
//     acked are counted as abandoned (they are not redelivered to anyone). Close stops accepting,
//     closes every subscription and counts what was left (Undelivered, UndeliveredEvents) and, per
//     topic, the events acked before it (AckedEvents): an ack given after Close counts nowhere.
//     Drain waits until everything accepted is acked and nothing is reserved.
//
// The bus must not block a Drop publisher or a reservation, start a goroutine per message, hold
// anything beyond its bounds, or know more about events than their count (event.MetadataEvents, or
// the weight reserved for a message). It imports no sluice package but event.
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

	// topic name -> *topic; a topic lives as long as the bus. Copied on write (under topicsMu) so
	// that the request path looks a topic up with a plain map read: topics are few and made once.
	topics   atomic.Pointer[map[string]*topic]
	topicsMu sync.Mutex

	mu      sync.Mutex // guards subs, and closing against wg.Add
	subs    map[*subscription]struct{}
	closed  atomic.Bool
	closing chan struct{}
	done    chan struct{}  // closed when Close has ended every subscription and counted what was left
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
	// The events of the same copies: the undelivered counters above, in events.
	abandonedEvents       atomic.Int64
	leftAtCloseEvents     atomic.Int64
	evictedEvents         atomic.Int64
	retainedAtCloseEvents atomic.Int64
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
		done:    make(chan struct{}),
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

// topic is the set of subscriptions of one topic name, its reservations, and its retention (Retain).
type topic struct {
	// The errors of the refusals that the request path may meet once per event; shared, as they
	// are immutable.
	full     *FullError // no subscriber had room
	noSubs   *FullError // nobody subscribes (Reserve, PublishReserved)
	tooLarge *FullError // more than a whole share

	mu       sync.Mutex                      // serialises subscription changes; with Retain, publishes too
	subs     atomic.Pointer[[]*subscription] // copy on write: publishers read it without a lock
	retained deque[*item]
	rEvents  int64
	rBytes   int64

	// The weight held by Reserve for messages not published yet. It counts against every share of
	// the topic as if it were queued in each. Apart from the fields that readers share, as every
	// Reserve writes it.
	_         [64]byte
	resEvents atomic.Int64
	resBytes  atomic.Int64
	_         [64]byte

	// ackedEvents counts the events of the topic's messages acked by its subscriptions (AckedEvents).
	ackedEvents atomic.Int64
}

func (b *Bus) topic(name string) *topic {
	if m := b.topics.Load(); m != nil {
		if t, ok := (*m)[name]; ok {
			return t
		}
	}
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	var old map[string]*topic
	if m := b.topics.Load(); m != nil {
		if t, ok := (*m)[name]; ok {
			return t
		}
		old = *m
	}
	t := &topic{
		full:     &FullError{Topic: name, Reason: ReasonQueueFull},
		noSubs:   &FullError{Topic: name, Reason: ReasonNoSubscribers},
		tooLarge: &FullError{Topic: name, Reason: ReasonTooLarge},
	}
	m := make(map[string]*topic, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = t
	b.topics.Store(&m)
	return t
}

// eachTopic calls f for every topic made so far.
func (b *Bus) eachTopic(f func(*topic)) {
	if m := b.topics.Load(); m != nil {
		for _, t := range *m {
			f(t)
		}
	}
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
// weight, besides the topic's reservations. It reads without locking: Drop uses it to refuse a
// message without building it, which is as if it had published a moment earlier.
func (t *topic) anyRoom(cfg *Config, events, bytes int64) bool {
	p := t.subs.Load()
	if p == nil {
		return false
	}
	events += t.resEvents.Load()
	bytes += t.resBytes.Load()
	for _, s := range *p {
		if s.hasRoom(cfg, events, bytes) {
			return true
		}
	}
	return false
}

// offer gives it to every subscription of the topic that has room, and appends to full those that
// have none. It returns how many took it. With reserved, it is the message of a reservation, which
// needs room for itself only (see subscription.offer).
func (t *topic) offer(it *item, full []*subscription, reserved bool) (int, []*subscription) {
	p := t.subs.Load()
	if p == nil {
		return 0, full
	}
	taken := 0
	for _, s := range *p {
		switch r, _ := s.offer(it, false, reserved); r {
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
			b.evictedEvents.Add(old.events)
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
	taken, full, retained := b.offerAll(t, it, false, buf[:0])

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

// offerAll offers it to every subscription of t (see topic.offer) and, with Retain, keeps it when it
// was accepted or nobody is there to accept it yet. It returns how many took it, those that had no
// room (appended to full) and whether it was retained.
func (b *Bus) offerAll(t *topic, it *item, reserved bool, full []*subscription) (int, []*subscription, bool) {
	if !b.cfg.Retain {
		taken, full := t.offer(it, full, reserved)
		return taken, full, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	taken, full := t.offer(it, full, reserved)
	// Kept when accepted, or when nobody is there to accept it (yet). Close reads the retention
	// under t.mu after setting closed, so nothing retained escapes its count.
	if taken > 0 || (len(full) == 0 && !b.closed.Load()) {
		t.retain(b, it)
		return taken, full, true
	}
	return taken, full, false
}

// waitForRoom offers it to each full subscription in turn, waiting for room until ctx ends or the
// bus closes. It returns how many took it, how many still had no room when it gave up, and why it
// gave up (nil when it did not).
func (b *Bus) waitForRoom(ctx context.Context, it *item, full []*subscription) (got, missed int, cause error) {
	for i, s := range full {
		for cause == nil {
			r, room := s.offer(it, true, false)
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
				switch r, _ := s.offer(it, false, false); r {
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

// Reserve holds room in topic for a future message that will weigh events and bytes, so that a
// producer can count the events it collects for a message against the bound before the message
// exists. Until PublishReserved publishes a message under it or Unreserve gives it back, the
// reserved weight counts against every subscriber share of the topic as if it were a message queued
// in each: Publish and other Reserve calls find that much less room. Many Reserve calls may add up
// to the room of one message.
//
// Reserve never waits. It refuses with ErrClosed once the bus is closed; with a *FullError whose
// Reason is ReasonTooLarge when the weight alone is more than MaxEvents or MaxBytes,
// ReasonNoSubscribers when nobody subscribes to topic (with Retain it reserves all the same, up to
// one share's bound, since retention evicts instead of refusing), or ReasonQueueFull when no
// subscription of topic has room for the reserved weight in addition to its own. Concurrent
// reservations never add up beyond the room of a share; right at the boundary, one may be refused
// although it would just have fitted. A refusal counts events in Stats.DroppedEvents under its
// reason and nothing in Stats.Dropped: a reservation is events, not a message yet.
//
// It is made for the request path, once per event: a few atomic operations, no lock, no allocation.
func (b *Bus) Reserve(topic string, events, bytes int64) error {
	if b.closed.Load() {
		b.droppedEvents[closed].Add(events)
		return ErrClosed
	}
	t := b.topic(topic)
	maxEvents, maxBytes := int64(b.cfg.MaxEvents), b.cfg.MaxBytes
	if events > maxEvents || bytes > maxBytes {
		b.droppedEvents[tooLarge].Add(events)
		return t.tooLarge
	}
	p := t.subs.Load()
	none := p == nil || len(*p) == 0
	if none && !b.cfg.Retain {
		b.droppedEvents[noSubscribers].Add(events)
		return t.noSubs
	}
	// Add first, then look at the shares with the new totals: of two concurrent reservations, the
	// later one sees the earlier one, so together they never exceed the room of a share. A share's
	// offer adds before it looks at the reservations for the same reason.
	re, rb := t.resEvents.Add(events), t.resBytes.Add(bytes)
	if none { // Retain: what retention can hold
		if re <= maxEvents && rb <= maxBytes {
			return nil
		}
	} else {
		for _, s := range *p {
			if s.eventsSeen.Load()+re <= maxEvents && s.bytesSeen.Load()+rb <= maxBytes {
				return nil
			}
		}
	}
	b.unreserve(t, events, bytes)
	b.droppedEvents[queueFull].Add(events)
	return t.full
}

// Unreserve gives back room that Reserve held in topic (events and bytes, possibly the sum of many
// Reserve calls), for events that will not be published after all. Publishers waiting for room
// (Block) in that topic wake up when their message now fits. The events are not counted anywhere:
// the caller counts why it gave them up.
func (b *Bus) Unreserve(topic string, events, bytes int64) {
	b.unreserve(b.topic(topic), events, bytes)
}

func (b *Bus) unreserve(t *topic, events, bytes int64) {
	t.resEvents.Add(-events)
	t.resBytes.Add(-bytes)
	if p := t.subs.Load(); p != nil {
		for _, s := range *p {
			s.wake()
		}
	}
}

// PublishReserved publishes msg to topic under room that Reserve held for it: events and bytes are
// the total reserved for this message (possibly the sum of many Reserve calls), and the message
// weighs exactly that, whatever its payload and metadata. It never waits. Each subscription of
// topic takes it if its share has room for this message, not counting the topic's reservations, so
// a share that has kept room for every reservation of the topic (a sole subscription always does)
// takes it. A share that has no room even so (it subscribed after the reservation, or it was already
// short when Reserve found room in another share of the topic) misses it, counted as
// "subscriber_full" as in Publish.
//
// Whatever happens, the reservation is used up: it no longer counts once PublishReserved returns.
// It returns nil when some subscription took msg (or Retain kept it), counted in Published and
// PublishedEvents. Otherwise it counts msg (one message, events events) in Stats.Dropped under the
// reason and returns ErrClosed once the bus is closed, or a *FullError with Reason
// ReasonNoSubscribers when topic has no subscription any more (unlike Publish, so that the
// caller can count the events it loses), ReasonTooLarge when the weight is beyond one share (Reserve
// would not have reserved it), or ReasonQueueFull when no share had room (see above).
//
// As with Publish, the bus keeps msg's UUID, payload, a copy of its metadata and, with
// PreserveContext, its context; the payload must not be modified afterwards.
func (b *Bus) PublishReserved(topic string, events, bytes int64, msg *message.Message) error {
	t := b.topic(topic)
	if b.closed.Load() {
		b.unreserve(t, events, bytes)
		b.drop(closed, events, 1)
		return ErrClosed
	}
	if events > int64(b.cfg.MaxEvents) || bytes > b.cfg.MaxBytes {
		b.unreserve(t, events, bytes)
		b.drop(tooLarge, events, 1)
		return t.tooLarge
	}
	if !b.cfg.Retain {
		if p := t.subs.Load(); p == nil || len(*p) == 0 {
			b.unreserve(t, events, bytes)
			b.drop(noSubscribers, events, 1)
			return t.noSubs
		}
	}
	it := b.newItem(msg, events, bytes)

	// The shares take it before the topic gives the reservation back: meanwhile it counts twice,
	// which only errs on the safe side.
	var buf [4]*subscription
	taken, full, retained := b.offerAll(t, it, true, buf[:0])
	b.unreserve(t, events, bytes)

	switch {
	case taken > 0 || retained:
		b.published.Add(1)
		b.publishedEvents.Add(events)
		if len(full) > 0 {
			b.drop(subscriberFull, events, int64(len(full)))
		}
		return nil
	case len(full) > 0:
		b.drop(queueFull, events, 1)
		return t.full
	case b.closed.Load():
		b.drop(closed, events, 1)
		return ErrClosed
	default:
		b.drop(noSubscribers, events, 1)
		return t.noSubs
	}
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

// Close stops accepting messages and reservations, ends every subscription (closing its channel and
// cancelling the contexts of the messages it handed out), and waits for that. It logs how many
// accepted messages were left unacked (see Undelivered) and returns nil. A Close that finds another
// one under way waits until that one has ended every subscription, so that whichever returns first,
// the counts (Undelivered, AckedEvents) are final when it does. Room still reserved stays reserved
// until its PublishReserved (which then returns ErrClosed) or Unreserve.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	b.closed.Store(true)
	close(b.closing)
	for s := range b.subs {
		s.cancel() // ends s.run
	}
	b.mu.Unlock()

	b.wg.Wait()
	b.eachTopic(func(t *topic) {
		t.mu.Lock()
		for i := 0; i < t.retained.len(); i++ {
			if it := *t.retained.at(i); !it.taken.Load() {
				b.retainedAtClose.Add(1)
				b.retainedAtCloseEvents.Add(it.events)
			}
		}
		t.retained, t.rEvents, t.rBytes = deque[*item]{}, 0, 0
		t.mu.Unlock()
	})

	reserved, _ := b.reserved()
	fields := watermill.LogFields{
		"undelivered": b.Undelivered(), "undelivered_events": b.UndeliveredEvents(),
		"published": b.published.Load(), "redelivered": b.redelivered.Load(), "reserved_events": reserved,
	}
	if b.Undelivered() > 0 {
		b.logger.Error("Bus closed with undelivered messages", nil, fields)
	} else {
		b.logger.Info("Bus closed", fields)
	}
	close(b.done)
	return nil
}

// Undelivered is how many accepted messages were never acked, counted per subscriber copy: those
// left unacked when their subscription ended (Stats.Abandoned) or when Close ended it, plus, with
// Retain, messages that no subscription ever took (evicted, or still retained at Close). It is final
// once Close has returned.
func (b *Bus) Undelivered() int {
	return int(b.abandoned.Load() + b.leftAtClose.Load() + b.evicted.Load() + b.retainedAtClose.Load())
}

// AckedEvents is how many events of topic's messages have been acked, summed over the topic's
// subscriptions (one per subscriber copy): with a single subscription per topic, as sluice has, the
// events of the topic that its subscriber confirmed as handled. An ack counts once its subscription
// has seen it (in hand-out order, see the package doc), and Close counts every ack given before it
// ended the subscription, none after: the count is final once Close has returned.
func (b *Bus) AckedEvents(topic string) int64 { return b.topic(topic).ackedEvents.Load() }

// UndeliveredEvents is Undelivered in events: the events that the same copies carry.
func (b *Bus) UndeliveredEvents() int64 {
	return b.abandonedEvents.Load() + b.leftAtCloseEvents.Load() + b.evictedEvents.Load() + b.retainedAtCloseEvents.Load()
}

// Drain waits until every message accepted so far has been acked by every subscriber that holds it,
// and nothing is reserved any more (every reservation published or given back): then every event
// accepted, reserved ones included, has been acked. It does not stop publishers; call it after they
// have stopped and flushed what they reserved for, before Close. When ctx ends first it returns an
// error that wraps ctx's and says how many messages were still unacked and how many events still
// reserved.
func (b *Bus) Drain(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		n := b.depth()
		r, _ := b.reserved()
		if n == 0 && r == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: drain: %d messages not acked, %d events reserved: %w", n, r, ctx.Err())
		case <-tick.C:
		}
	}
}

// reserved is the weight held by Reserve, summed over topics.
func (b *Bus) reserved() (events, bytes int64) {
	b.eachTopic(func(t *topic) {
		events += t.resEvents.Load()
		bytes += t.resBytes.Load()
	})
	return events, bytes
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
	InFlight      int64 // handed out and not yet seen acked or nacked (acks are seen in hand-out order)
	Waiting       int64 // nacked and waiting for redelivery

	// ReservedEvents is the room held by Reserve and not yet published or given back, summed over
	// topics; it counts against every share of its topic on top of DepthEvents.
	ReservedEvents int64
	ReservedBytes  int64 // the same in bytes

	Published       int64 // messages accepted by at least one subscriber (or retained), once per message
	PublishedEvents int64 // the events those messages carry

	// Dropped counts what was not accepted, by reason (see the Reason constants): in messages, and
	// for "subscriber_full" in subscriber copies. For every message Publish or PublishReserved was
	// given, exactly one of Published, Dropped["queue_full"], ["too_large"], ["no_subscribers"] or
	// ["closed"] counts it.
	Dropped map[string]int64
	// DroppedEvents is Dropped in events, plus the events of refused Reserve calls, which count here
	// only (a reservation is events, not a message).
	DroppedEvents map[string]int64

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
	st.ReservedEvents, st.ReservedBytes = b.reserved()
	if b.cfg.Retain {
		b.eachTopic(func(t *topic) {
			t.mu.Lock()
			st.Retained += int64(t.retained.len())
			t.mu.Unlock()
		})
	}
	return st
}
