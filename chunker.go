package sluice

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
)

// chunker is one route's producer side: publishers append events to open chunks, and each sealed
// chunk is published as one bus message (package event's format: NDJSON payload, the decoded events
// in its context). It is sharded so that appending scales with cores: a sync.Pool hands each
// processor (P) its own shard most of the time, so the shard's lock is uncontended and its memory
// stays in that core's cache; any goroutine may still use any shard (the lock keeps that correct).
//
// An event's JSON line is copied once, into the open chunk's payload, which becomes the message's
// payload as it is; the event's Raw is that line (no other copy of the encoding is kept), and the
// event is made lean (event.Lean): its request, response and attributes stay in Raw only.
//
// Every appended event first reserves its room on the bus (bus.Reserve): open chunks count toward the
// route's bound, an event that finds no room is refused at once (the request path never waits), and
// a sealed chunk is published under its reservation, so it is never refused for lack of room.
//
// It counts the events it accepted, which close makes final: at shutdown the route's events not
// written are those accepted and not acknowledged, wherever they were at the deadline (an open chunk,
// a chunk sealed and not yet published, the bus, a batch).
type chunker struct {
	topic  string
	bus    *bus.Bus
	policy config.ChunkPolicy
	shards []*shard
	pick   sync.Pool // *shard: per-P affinity
	next   atomic.Uint32
	closed atomic.Bool // close was called: add refuses every event (read under a shard's lock)
	// lost counts the events of sealed chunks that the bus did not take (closed, or the route's
	// subscription gone), by reason.
	lost func(reason string, n int)
}

// shard is an open chunk; its fields are guarded by mu.
type shard struct {
	c       *chunker
	mu      sync.Mutex
	events  []*event.Event
	payload []byte    // the events' lines; its length is the bytes reserved
	opened  time.Time // when the first event was appended
	timer   *time.Timer
	last    int  // the payload length of the last chunk sealed: sizes the next one's buffer
	grow    bool // the last chunk was sealed because its buffer was full: the next one's is twice as large
	// foreign says an event of the chunk came encoded from elsewhere (Raw set by the caller): the
	// chunk then travels as bytes only, and the route decodes and validates it.
	foreign  bool
	accepted int64    // the events ever appended to the shard's chunks
	_        [64]byte // keep shards off each other's cache lines
}

// sealed is a chunk taken from a shard, to be published.
type sealed struct {
	events  []*event.Event
	payload []byte
	foreign bool
}

// minChunkBuffer is the smallest payload buffer a chunk starts with.
const minChunkBuffer = 4 << 10

func newChunker(topic string, b *bus.Bus, p config.ChunkPolicy, lost func(string, int)) *chunker {
	c := &chunker{topic: topic, bus: b, policy: p, lost: lost}
	n := runtime.GOMAXPROCS(0)
	c.shards = make([]*shard, n)
	for i := range c.shards {
		s := &shard{c: c}
		s.timer = time.AfterFunc(time.Hour, s.lingered)
		s.timer.Stop()
		c.shards[i] = s
	}
	c.pick.New = func() any { return c.shards[int(c.next.Add(1))%len(c.shards)] }
	return c
}

// add appends e, whose JSON encoding is line, to an open chunk. When e.Raw is empty it becomes the
// copy of line in the chunk (set before any other goroutine can see e). It returns the bus's refusal
// when the route has no room for it (a *bus.FullError or bus.ErrClosed), or bus.ErrClosed once the
// chunker is closed; then nothing was appended.
func (c *chunker) add(e *event.Event, line []byte, foreign bool) error {
	w := len(line) + 1
	if err := c.bus.Reserve(c.topic, 1, int64(w)); err != nil {
		return err
	}
	s := c.pick.Get().(*shard)
	s.mu.Lock()
	if c.closed.Load() {
		s.mu.Unlock()
		c.pick.Put(s)
		c.bus.Unreserve(c.topic, 1, int64(w))
		return bus.ErrClosed
	}
	var out [2]sealed
	n := 0
	if len(s.events) > 0 && (len(s.payload)+w > cap(s.payload) || len(s.payload)+w > int(c.policy.MaxBytes)) {
		// It does not fit: the open chunk goes first (a chunk passes MaxBytes only when it is
		// one event, and its buffer never moves, so that the lines its events point to stay its
		// payload's).
		s.grow = len(s.payload)+w > cap(s.payload)
		out[n], n = s.take(), n+1
	}
	if len(s.events) == 0 {
		size := s.last + s.last/4 // as large as the last chunk, and some
		if s.grow {
			size = 2 * s.last
		}
		s.payload = make([]byte, 0, max(w, min(int(c.policy.MaxBytes), max(size, minChunkBuffer))))
		s.opened = time.Now()
		s.timer.Reset(c.policy.Linger)
	}
	start := len(s.payload)
	s.payload = append(append(s.payload, line...), '\n')
	if len(e.Raw) == 0 {
		// Where EncodeRaw noted its nested parts, which live on in Raw only (Lean): far less memory
		// held while it waits.
		e.SetRaw(s.payload[start : len(s.payload)-1 : len(s.payload)-1])
		e.Lean()
	}
	s.events = append(s.events, e)
	s.accepted++
	s.foreign = s.foreign || foreign
	if len(s.events) >= c.policy.MaxEvents || len(s.payload) >= int(c.policy.MaxBytes) {
		s.grow = false
		out[n], n = s.take(), n+1
	}
	s.mu.Unlock()
	c.pick.Put(s)
	for _, ch := range out[:n] {
		c.publish(ch)
	}
	return nil
}

// take empties the shard and returns what it held; called with mu held.
func (s *shard) take() sealed {
	ch := sealed{events: s.events, payload: s.payload, foreign: s.foreign}
	s.last = len(s.payload)
	s.events, s.payload, s.foreign = make([]*event.Event, 0, cap(s.events)), nil, false
	s.timer.Stop()
	return ch
}

// lingered seals the shard's chunk once it is Linger old (a timer armed for an earlier chunk finds a
// younger one and waits for the rest of its time).
func (s *shard) lingered() {
	s.mu.Lock()
	if len(s.events) == 0 {
		s.mu.Unlock()
		return
	}
	if left := s.c.policy.Linger - time.Since(s.opened); left > 0 {
		s.timer.Reset(left)
		s.mu.Unlock()
		return
	}
	s.grow = false
	ch := s.take()
	s.mu.Unlock()
	s.c.publish(ch)
}

// flush seals and publishes every open chunk now.
func (c *chunker) flush() {
	for _, s := range c.shards {
		s.mu.Lock()
		var ch sealed
		if len(s.events) > 0 {
			ch = s.take()
		}
		s.mu.Unlock()
		if ch.events != nil {
			c.publish(ch)
		}
	}
}

// close refuses every later event (add returns bus.ErrClosed), seals and publishes every open chunk,
// and returns how many events the route accepted in all, which is final from then on. An add under
// way appends before close takes its shard, or is refused.
func (c *chunker) close() (accepted int64) {
	c.closed.Store(true)
	c.flush()
	for _, s := range c.shards {
		s.mu.Lock()
		accepted += s.accepted
		s.mu.Unlock()
	}
	return accepted
}

// publish publishes a sealed chunk under its reservation.
func (c *chunker) publish(ch sealed) {
	msg := message.NewMessage(event.NewID().String(), ch.payload)
	msg.Metadata.Set(event.MetadataEvents, strconv.Itoa(len(ch.events)))
	msg.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	if !ch.foreign {
		msg.SetContext(event.NewContext(context.Background(), ch.events))
	}
	if err := c.bus.PublishReserved(c.topic, int64(len(ch.events)), int64(len(ch.payload)), msg); err != nil {
		c.lost(dropReason(err), len(ch.events))
	}
}

// dropReason names the reason of a bus refusal.
func dropReason(err error) string {
	var full *bus.FullError
	if errors.As(err, &full) {
		return full.Reason
	}
	return bus.ReasonClosed
}
