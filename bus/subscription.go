package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// A subscription waits on the ack channels of its oldest unacked message, which finds in-order acks
// at once; a sweep, one non-blocking check per unacked message, finds the others. Sweeps start
// sweepMin apart and back off to sweepMax while they find nothing.
const (
	sweepMin = 2 * time.Millisecond
	sweepMax = 100 * time.Millisecond
)

const (
	refillBatch = 64 // how many queued messages a subscription takes under one lock
	outBuffer   = 64 // the subscription channel's buffer (at most MaxInFlight)
	fastSends   = 64 // hand-outs between two looks at the end of the subscription
)

// subscription is one Subscribe call: its share of the bound, and the one goroutine (run) that hands
// its messages out and watches their acks.
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

	inFlight atomic.Int64 // for Stats
	waiting  atomic.Int64

	// Owned by run.
	local   []*item // taken from queue, not yet handed out
	li      int
	window  deque[handout] // handed out, in order; settled entries wait to leave from the front
	live    int            // unsettled entries of window
	retries retryHeap      // nacked, waiting for redelivery
	used    int            // window slots: handed out or waiting for redelivery, plus a prepared next
	timer   *time.Timer
	timerAt time.Time // when timer fires; zero when it is not armed
	sweepAt time.Time // when the next sweep is due; zero when none is planned
	sweepIn time.Duration
}

// handout is one delivery of an item to this subscription.
type handout struct {
	it      *item
	nacks   int // how often this subscription has nacked the item before
	msg     *message.Message
	cancel  context.CancelFunc
	settled bool // acked or nacked (and dealt with)
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
		bus:     b,
		msgCtx:  msgCtx,
		cancel:  cancel,
		out:     make(chan *message.Message, min(b.cfg.MaxInFlight, outBuffer)),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		timer:   timer,
		sweepIn: sweepMin,
	}
}

// hasRoom reports, without locking, whether the share seemed to have room for a message of this
// weight a moment ago.
func (s *subscription) hasRoom(cfg *Config, events, bytes int64) bool {
	return s.eventsSeen.Load()+events <= int64(cfg.MaxEvents) && s.bytesSeen.Load()+bytes <= cfg.MaxBytes
}

// add changes the share's weight; called with mu held.
func (s *subscription) add(msgs, events, bytes int64) {
	s.msgs += msgs
	s.events += events
	s.bytes += bytes
	s.eventsSeen.Store(s.events)
	s.bytesSeen.Store(s.bytes)
}

// offer puts it in the share if there is room. With wait, when there is none, it also returns a
// channel that is closed once acks free some (or the subscription ends).
func (s *subscription) offer(it *item, wait bool) (offerResult, <-chan struct{}) {
	cfg := &s.bus.cfg
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return ended, nil
	}
	if s.events+it.events > int64(cfg.MaxEvents) || s.bytes+it.bytes > cfg.MaxBytes {
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
	wasEmpty := s.queue.len() == 0
	s.queue.push(it)
	s.add(1, it.events, it.bytes)
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

// release takes n acked messages out of the share and wakes the publishers waiting for room once
// the smallest of their messages fits (some may find it taken and wait again).
func (s *subscription) release(n, events, bytes int64) {
	cfg := &s.bus.cfg
	s.mu.Lock()
	s.add(-n, -events, -bytes)
	var room chan struct{}
	if s.events+s.waitEvents <= int64(cfg.MaxEvents) && s.bytes+s.waitBytes <= cfg.MaxBytes {
		room, s.room = s.room, nil
	}
	s.mu.Unlock()
	if room != nil {
		close(room)
	}
	s.used -= int(n)
}

func (s *subscription) run() {
	defer s.finish()
	var (
		next    handout
		hasNext bool
		ended   = s.msgCtx.Done() // the Subscribe context ended, or Close
	)
	for fast := 0; ; {
		s.reap(false)
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
		var acked, nacked <-chan struct{}
		if s.window.len() > 0 {
			h := s.window.at(0) // never settled: reap pops settled entries from the front
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
			if !s.sweepAt.IsZero() && !time.Now().Before(s.sweepAt) {
				s.sweepAt = time.Time{}
				if s.live > 1 && s.reap(true) == 0 {
					s.sweepIn = min(2*s.sweepIn, sweepMax)
				} else {
					s.sweepIn = sweepMin
				}
			}
		case <-ended:
			return
		}
	}
}

// sent records a hand-out that the channel took.
func (s *subscription) sent(h handout) {
	s.window.push(h)
	s.live++
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

// reap settles acked and nacked messages of the window: from the front up to the first unacked one,
// or, with sweep, all of them. Acked ones leave the share; nacked ones wait for redelivery. It
// returns how many it settled.
func (s *subscription) reap(sweep bool) int {
	var n, events, bytes int64
	var now time.Time
	cfg := &s.bus.cfg
	settled, found := 0, 0
	for i := 0; i < s.window.len(); i++ {
		h := s.window.at(i)
		if h.settled {
			settled++
			continue
		}
		st := stateOf(h.msg)
		if st == pending {
			if !sweep {
				break
			}
			continue
		}
		if h.cancel != nil {
			h.cancel()
		}
		if st == ackedState {
			n++
			events += h.it.events
			bytes += h.it.bytes
		} else {
			if now.IsZero() {
				now = time.Now()
			}
			nacks := h.nacks + 1
			s.retries.push(retry{it: h.it, nacks: nacks, due: now.Add(cfg.redeliveryDelay(nacks))})
			s.waiting.Add(1)
		}
		*h = handout{settled: true}
		settled++
		found++
		s.live--
		s.inFlight.Add(-1)
	}
	for s.window.len() > 0 && s.window.at(0).settled {
		s.window.pop()
		settled--
	}
	if settled > s.window.len()/2 {
		// A sweep left holes behind an unacked front: close them so that the window stays
		// within twice MaxInFlight however long the front stays unacked.
		s.window.compact(func(h *handout) bool { return !h.settled })
	}
	if n > 0 {
		s.release(n, events, bytes)
	}
	return found
}

// arm sets the timer for the next sweep, or the earliest redelivery unless a message is already
// waiting to be handed out (redeliveries are prepared after it).
func (s *subscription) arm(hasNext bool) {
	if s.live > 1 && s.sweepAt.IsZero() {
		s.sweepAt = time.Now().Add(s.sweepIn)
	}
	at := s.sweepAt
	if !hasNext && len(s.retries) > 0 && (at.IsZero() || s.retries[0].due.Before(at)) {
		at = s.retries[0].due
	}
	if at.IsZero() || (!s.timerAt.IsZero() && !at.Before(s.timerAt)) {
		return // nothing to wait for, or the timer fires no later than needed
	}
	s.timer.Reset(time.Until(at))
	s.timerAt = at
}

// finish ends the subscription: the share is emptied and counted, the channel closed.
func (s *subscription) finish() {
	b := s.bus
	s.reap(true) // acks given before the end count as acks
	s.mu.Lock()
	s.ended = true
	left := s.msgs
	s.add(-s.msgs, -s.events, -s.bytes)
	s.queue = deque[*item]{}
	room := s.room
	s.room = nil
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
	} else {
		b.abandoned.Add(left)
	}
	b.mu.Unlock()
	close(s.done)
	b.wg.Done()
}
