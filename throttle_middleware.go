package sluice

import (
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/event"
)

// Throttle is Watermill handler middleware that limits the events per second a handler takes,
// whatever the number of events in each message: a message of n events (event.MetadataEvents, 1 when
// absent) waits until the events before it have had their time at the rate, then takes n/rate of its
// own. Watermill's Throttle counts messages, which says nothing of the load once a message is a batch
// of events. Each route needs its own Throttle (it is one rate for every message it sees).
type Throttle struct {
	perEvent time.Duration
	mu       sync.Mutex
	next     time.Time // when the next message may go
	// onWait, when set, is told how long each message waited for its turn (the route's
	// sluice_throttle_wait_seconds).
	onWait func(waited time.Duration)
}

// NewThrottle returns a throttle of eventsPerSecond (positive).
func NewThrottle(eventsPerSecond float64) *Throttle {
	return &Throttle{perEvent: time.Duration(float64(time.Second) / eventsPerSecond)}
}

func (t *Throttle) waited(d time.Duration) {
	if t.onWait != nil {
		t.onWait(d)
	}
}

// Middleware makes h wait for its turn; a message whose context ends while it waits fails with the
// context's error.
func (t *Throttle) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		n, err := strconv.Atoi(msg.Metadata.Get(event.MetadataEvents))
		if err != nil || n < 1 {
			n = 1
		}
		t.mu.Lock()
		now := time.Now()
		at := t.next
		if at.Before(now) {
			at = now
		}
		t.next = at.Add(time.Duration(n) * t.perEvent)
		t.mu.Unlock()
		if wait := at.Sub(now); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-msg.Context().Done():
				timer.Stop()
				t.waited(time.Since(now))
				return nil, msg.Context().Err()
			}
		}
		t.waited(time.Since(now))
		return h(msg)
	}
}
