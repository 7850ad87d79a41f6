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
// Every appended event first reserves its room on the bus (bus.Reserve): open chunks count toward the
// route's bound, an event that finds no room is refused at once (the request path never waits), and
// a sealed chunk is published under its reservation, so it is never refused for lack of room.
type chunker struct {
	route  string
	topic  string
	bus    *bus.Bus
	policy config.ChunkPolicy
	shards []*shard
	pick   sync.Pool // *shard: per-P affinity
	next   atomic.Uint32
	// lost counts the events of sealed chunks that the bus did not take (closed, or the route's
	// subscription gone), by reason.
	lost func(reason string, n int)
}

// shard is an open chunk; its fields are guarded by mu.
type shard struct {
	c      *chunker
	mu     sync.Mutex
	events []*event.Event
	bytes  int64     // reserved bytes: the payload's length once sealed
	opened time.Time // when the first event was appended
	timer  *time.Timer
	// foreign says an event of the chunk came encoded from elsewhere (Raw set by the caller): the
	// chunk then travels as bytes only, and the route decodes and validates it.
	foreign bool
	_       [64]byte // keep shards off each other's cache lines
}

func newChunker(route, topic string, b *bus.Bus, p config.ChunkPolicy, lost func(string, int)) *chunker {
	c := &chunker{route: route, topic: topic, bus: b, policy: p, lost: lost}
	n := 2 * runtime.GOMAXPROCS(0)
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

// add appends e (whose Raw is its encoding) to an open chunk. It returns the bus's refusal when the
// route has no room for it (a *bus.FullError or bus.ErrClosed); then nothing was appended.
func (c *chunker) add(e *event.Event, foreign bool) error {
	w := int64(len(e.Raw) + 1)
	if err := c.bus.Reserve(c.topic, 1, w); err != nil {
		return err
	}
	s := c.pick.Get().(*shard)
	s.mu.Lock()
	s.events = append(s.events, e)
	s.bytes += w
	s.foreign = s.foreign || foreign
	var sealed []*event.Event
	var bytes int64
	var f bool
	if len(s.events) >= c.policy.MaxEvents || s.bytes >= c.policy.MaxBytes {
		sealed, bytes, f = s.take()
	} else if len(s.events) == 1 {
		s.opened = time.Now()
		s.timer.Reset(c.policy.Linger)
	}
	s.mu.Unlock()
	c.pick.Put(s)
	if sealed != nil {
		c.publish(sealed, bytes, f)
	}
	return nil
}

// take empties the shard and returns what it held; called with mu held.
func (s *shard) take() ([]*event.Event, int64, bool) {
	events, bytes, foreign := s.events, s.bytes, s.foreign
	s.events, s.bytes, s.foreign = make([]*event.Event, 0, cap(events)), 0, false
	s.timer.Stop()
	return events, bytes, foreign
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
	events, bytes, foreign := s.take()
	s.mu.Unlock()
	s.c.publish(events, bytes, foreign)
}

// flush seals and publishes every open chunk now (shutdown).
func (c *chunker) flush() {
	for _, s := range c.shards {
		s.mu.Lock()
		var events []*event.Event
		var bytes int64
		var foreign bool
		if len(s.events) > 0 {
			events, bytes, foreign = s.take()
		}
		s.mu.Unlock()
		if events != nil {
			c.publish(events, bytes, foreign)
		}
	}
}

// publish publishes a sealed chunk under its reservation.
func (c *chunker) publish(events []*event.Event, bytes int64, foreign bool) {
	payload := make([]byte, 0, bytes)
	for _, e := range events {
		payload = append(append(payload, e.Raw...), '\n')
	}
	msg := message.NewMessage(event.NewID().String(), payload)
	msg.Metadata.Set(event.MetadataEvents, strconv.Itoa(len(events)))
	msg.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	if !foreign {
		msg.SetContext(event.NewContext(context.Background(), events))
	}
	if err := c.bus.PublishReserved(c.topic, int64(len(events)), bytes, msg); err != nil {
		c.lost(dropReason(err), len(events))
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
