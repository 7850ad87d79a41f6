package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

const (
	refillBatch = 64 // how many queued messages a subscription takes under one lock
	outBuffer   = 64 // the subscription channel's buffer (at most MaxInFlight)
	fastSends   = 64 // hand-outs between two looks at the end of the subscription
)

// subscription is one Subscribe call: its share of the bound, and the one goroutine (run) that hands
// its messages out and watches their acks.
//
// run waits on the ack and nack channels of one message only: the front of its window, the oldest
// one handed out and not settled. Each turn of run starts with reap, which looks at the front
// without blocking and, while it is settled, settles it and goes on to the next, stopping at the
// first message that is neither acked nor nacked: one look per turn, plus one per message settled.
// So acks are seen in hand-out order: a message acked before an older one keeps its room and its
// window slot until the older one settles, and nacked messages are scheduled for redelivery in
// hand-out order, their delay counted from then. No timer polls the window; the only timer is the
// one of the earliest redelivery.
type subscription struct {
	bus    *Bus
	topic  *topic
	msgCtx context.Context    // from the Subscribe context; parent of the delivered messages' contexts
	cancel context.CancelFunc // cancels msgCtx, which ends the subscription (Close calls it too)
	out    chan *message.Message
	notify chan struct{} // capacity 1: the queue went from empty to not empty
	done   chan struct{} // closed once the subscription has ended

	mu     sync.Mutex
	queue  deque[*item] // accepted, not yet taken by run
	msgs   int64        // the share: accepted and not yet acked (queued, in flight or waiting)
	events int64
	bytes  int64
	ended  bool
	// The share's events and bytes again, for lock-free reads (hasRoom); written under mu.
	eventsSeen atomic.Int64
	bytesSeen  atomic.Int64
	room       chan struct{} // closed when acks free room; made by the first publisher to wait for it
	// The smallest events and bytes among the messages waiting for room (each minimum on its own).
	waitEvents int64
	waitBytes  int64
	// roomWanted is set while a publisher waits for room (room != nil), so that giving back a
	// reservation looks at the share only then (wake). A waiting offer sets it before it looks at
	// the topic's reservations: of that and a concurrent Unreserve, one sees the other.
	roomWanted atomic.Bool

	inFlight atomic.Int64 // for Stats
	waiting  atomic.Int64

	// Owned by run.
	local   []*item // taken from queue, not yet handed out
	li      int
	window  deque[handout] // handed out and not settled yet, in hand-out order
	retries retryHeap      // nacked, waiting for redelivery
	used    int            // window slots: handed out or waiting for redelivery, plus a prepared next
	timer   *time.Timer    // the earliest redelivery
	timerAt time.Time      // when timer fires; zero when it is not armed
}

// handout is one delivery of an item to this subscription.
type handout struct {
	it     *item
	nacks  int // how often this subscription has nacked the item before
	msg    *message.Message
	cancel context.CancelFunc
}

type offerResult int

const (
	offered offerResult = iota
	noRoom
	ended
)

func newSubscription(ctx context.Context, b *Bus) *subscription {
	msgCtx, cancel := context.WithCancel(ctx)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	return &subscription{
		bus:    b,
		msgCtx: msgCtx,
		cancel: cancel,
		out:    make(chan *message.Message, min(b.cfg.MaxInFlight, outBuffer)),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		timer:  timer,
	}
}

// hasRoom reports, without locking, whether the share seemed to have room for a message of this
// weight (plus the topic's reservations, which the caller adds) a moment ago.
func (s *subscription) hasRoom(cfg *Config, events, bytes int64) bool {
	return s.eventsSeen.Load()+events <= int64(cfg.MaxEvents) && s.bytesSeen.Load()+bytes <= cfg.MaxBytes
}

// fits reports whether the share, with the topic's reservations, has room for events and bytes
// more; called with mu held.
func (s *subscription) fits(events, bytes int64) bool {
	cfg := &s.bus.cfg
	return s.events+s.topic.resEvents.Load()+events <= int64(cfg.MaxEvents) &&
		s.bytes+s.topic.resBytes.Load()+bytes <= cfg.MaxBytes
}

// add changes the share's weight; called with mu held.
func (s *subscription) add(msgs, events, bytes int64) {
	s.msgs += msgs
	s.events += events
	s.bytes += bytes
	s.eventsSeen.Store(s.events)
	s.bytesSeen.Store(s.bytes)
}

// offer puts it in the share if there is room for it and the topic's reservations. With reserved,
// it is the message of a reservation: it needs room for itself only, since its reservation already
// counted against the share (and leaves the topic once the shares took it). With wait, when there is
// no room, it also returns a channel that is closed once acks or given-back reservations free some
// (or the subscription ends).
func (s *subscription) offer(it *item, wait, reserved bool) (offerResult, <-chan struct{}) {
	cfg := &s.bus.cfg
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return ended, nil
	}
	if wait {
		s.roomWanted.Store(true) // before the look at the reservations: see roomWanted
	}
	// Add first, then look at the topic's reservations (Reserve adds first, then looks at the
	// shares): of an offer and a concurrent Reserve, one sees the other.
	s.add(1, it.events, it.bytes)
	ok := s.events <= int64(cfg.MaxEvents) && s.bytes <= cfg.MaxBytes
	if ok && !reserved {
		ok = s.fits(0, 0)
	}
	if !ok {
		s.add(-1, -it.events, -it.bytes)
		var room chan struct{}
		if wait {
			if s.room == nil {
				s.room = make(chan struct{})
				s.waitEvents, s.waitBytes = it.events, it.bytes
			} else {
				s.waitEvents, s.waitBytes = min(s.waitEvents, it.events), min(s.waitBytes, it.bytes)
			}
			room = s.room
		}
		s.mu.Unlock()
		return noRoom, room
	}
	if wait {
		s.roomWanted.Store(s.room != nil)
	}
	wasEmpty := s.queue.len() == 0
	s.queue.push(it)
	if cfg.Retain {
		it.taken.Store(true)
	}
	s.mu.Unlock()
	if wasEmpty {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return offered, nil
}

// release takes n acked messages out of the share, counts their events as acked in the topic, and
// wakes the publishers waiting for room.
func (s *subscription) release(n, events, bytes int64) {
	s.topic.ackedEvents.Add(events)
	s.mu.Lock()
	s.add(-n, -events, -bytes)
	room := s.roomFreed()
	s.mu.Unlock()
	if room != nil {
		close(room)
	}
	s.used -= int(n)
}

// wake wakes the publishers waiting for room in the share, if any, once the smallest of their
// messages fits; a reservation given back calls it.
func (s *subscription) wake() {
	if !s.roomWanted.Load() {
		return
	}
	s.mu.Lock()
	room := s.roomFreed()
	s.mu.Unlock()
	if room != nil {
		close(room)
	}
}

// roomFreed returns the channel to close when the smallest message waiting for room in the share
// now fits (some of the publishers may find it taken and wait again), and forgets it; nil when none.
// Called with mu held.
func (s *subscription) roomFreed() chan struct{} {
	if s.room == nil || !s.fits(s.waitEvents, s.waitBytes) {
		return nil
	}
	room := s.room
	s.room = nil
	s.roomWanted.Store(false)
	return room
}

func (s *subscription) run() {
	defer s.finish()
	var (
		next    handout
		hasNext bool
		ended   = s.msgCtx.Done() // the Subscribe context ended, or Close
	)
	for fast := 0; ; {
		s.reap()
		if !hasNext {
			next, hasNext = s.prepare()
		}
		// While the channel's buffer has room, hand out without a full select; do one every
		// fastSends hand-outs all the same, to see the end of the subscription.
		if hasNext && fast < fastSends {
			select {
			case s.out <- next.msg:
				s.sent(next)
				hasNext, next = false, handout{}
				fast++
				continue
			default:
			}
		}
		fast = 0

		var out chan<- *message.Message
		if hasNext {
			out = s.out
		}
		// The front of the window only: reap found it unsettled, and walks on behind it once it
		// settles.
		var acked, nacked <-chan struct{}
		if s.window.len() > 0 {
			h := s.window.at(0)
			acked, nacked = h.msg.Acked(), h.msg.Nacked()
		}
		s.arm(hasNext)

		select {
		case out <- next.msg:
			s.sent(next)
			hasNext, next = false, handout{}
		case <-acked:
		case <-nacked:
		case <-s.notify:
		case <-s.timer.C:
			s.timerAt = time.Time{}
		case <-ended:
			return
		}
	}
}

// sent records a hand-out that the channel took.
func (s *subscription) sent(h handout) {
	s.window.push(h)
	s.inFlight.Add(1)
	if h.nacks > 0 {
		s.bus.redelivered.Add(1)
	}
}

// prepare returns the next message to hand out: a nacked one that is due, else a queued one if the
// window has room.
func (s *subscription) prepare() (handout, bool) {
	if len(s.retries) > 0 && !s.retries[0].due.After(time.Now()) {
		r := s.retries.pop()
		s.waiting.Add(-1)
		return s.handout(r.it, r.nacks), true
	}
	if s.used >= s.bus.cfg.MaxInFlight {
		return handout{}, false
	}
	if s.li == len(s.local) && !s.refill() {
		return handout{}, false
	}
	it := s.local[s.li]
	s.local[s.li] = nil
	s.li++
	s.used++
	return s.handout(it, 0), true
}

func (s *subscription) refill() bool {
	s.local, s.li = s.local[:0], 0
	s.mu.Lock()
	for n := min(s.queue.len(), refillBatch); n > 0; n-- {
		s.local = append(s.local, s.queue.pop())
	}
	s.mu.Unlock()
	return len(s.local) > 0
}

// handout builds a fresh message for it: same UUID and payload, its own metadata map, ack channels
// and context.
func (s *subscription) handout(it *item, nacks int) handout {
	m := message.NewMessage(it.uuid, it.payload)
	for k, v := range it.md {
		m.Metadata[k] = v
	}
	h := handout{it: it, nacks: nacks, msg: m}
	if s.bus.cfg.PreserveContext {
		if it.ctx != nil {
			m.SetContext(it.ctx)
		}
	} else {
		ctx, cancel := context.WithCancel(s.msgCtx)
		m.SetContext(ctx)
		h.cancel = cancel
	}
	return h
}

type ackState int

const (
	pending ackState = iota
	ackedState
	nackedState
)

func stateOf(m *message.Message) ackState {
	select {
	case <-m.Acked():
		return ackedState
	default:
	}
	select {
	case <-m.Nacked():
		return nackedState
	default:
	}
	return pending
}

// reap settles the front of the window while it is acked or nacked: it stops at the first message
// that is neither, the new front. Acked messages leave the share; nacked ones wait for redelivery,
// in hand-out order.
func (s *subscription) reap() {
	var n, events, bytes int64
	for s.window.len() > 0 {
		h := s.window.at(0)
		st := stateOf(h.msg)
		if st == pending {
			break
		}
		if h.cancel != nil {
			h.cancel()
		}
		if st == ackedState {
			n++
			events += h.it.events
			bytes += h.it.bytes
		} else {
			// The clock is read after the nack was seen, never before: the delay counts from the
			// nack at the earliest.
			nacks := h.nacks + 1
			s.retries.push(retry{it: h.it, nacks: nacks, due: time.Now().Add(s.bus.cfg.redeliveryDelay(nacks))})
			s.waiting.Add(1)
		}
		s.window.pop()
		s.inFlight.Add(-1)
	}
	if n > 0 {
		s.release(n, events, bytes)
	}
}

// arm sets the timer for the earliest redelivery, unless a message is already waiting to be handed
// out (redeliveries are prepared after it).
func (s *subscription) arm(hasNext bool) {
	if hasNext || len(s.retries) == 0 {
		return
	}
	at := s.retries[0].due
	if !s.timerAt.IsZero() && !at.Before(s.timerAt) {
		return // the timer fires no later than needed
	}
	s.timer.Reset(time.Until(at))
	s.timerAt = at
}

// finish ends the subscription: the share is emptied and counted, the channel closed.
func (s *subscription) finish() {
	b := s.bus
	// Acks given before the end count as acks, in order or not: one pass over the window.
	var n, events, bytes int64
	for i := 0; i < s.window.len(); i++ {
		if h := s.window.at(i); stateOf(h.msg) == ackedState {
			n++
			events += h.it.events
			bytes += h.it.bytes
		}
	}
	s.window = deque[handout]{}
	if n > 0 {
		s.release(n, events, bytes)
	}
	s.mu.Lock()
	s.ended = true
	left, leftEvents := s.msgs, s.events
	s.add(-s.msgs, -s.events, -s.bytes)
	s.queue = deque[*item]{}
	room := s.room
	s.room = nil
	s.roomWanted.Store(false)
	s.mu.Unlock()
	if room != nil {
		close(room)
	}
	s.cancel()
	s.timer.Stop()
	s.inFlight.Store(0)
	s.waiting.Store(0)
	for len(s.out) > 0 { // handed out, never received: take them back (they are counted in left)
		select {
		case <-s.out:
		default:
		}
	}
	close(s.out)
	if s.topic != nil {
		s.topic.remove(s)
	}

	b.mu.Lock()
	delete(b.subs, s)
	if b.closed.Load() {
		b.leftAtClose.Add(left)
		b.leftAtCloseEvents.Add(leftEvents)
	} else {
		b.abandoned.Add(left)
		b.abandonedEvents.Add(leftEvents)
	}
	b.mu.Unlock()
	close(s.done)
	b.wg.Done()
}
