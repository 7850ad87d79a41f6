package bus

import (
	"fmt"
	"strings"
	"time"
)

// FullPolicy says what Publish does when a subscriber's share of the bus has no room for a message.
type FullPolicy int

const (
	// Drop makes Publish return at once: with ErrFull when no subscriber had room (the request path).
	Drop FullPolicy = iota
	// Block makes Publish wait for room until the message's context (msg.Context()) ends, or the bus
	// closes (producers that prefer backpressure).
	Block
)

// String returns the policy's configuration name: "drop" or "block".
func (p FullPolicy) String() string {
	switch p {
	case Drop:
		return "drop"
	case Block:
		return "block"
	}
	return fmt.Sprintf("FullPolicy(%d)", int(p))
}

// ParseFullPolicy accepts "drop" or "block" in any case.
func ParseFullPolicy(s string) (FullPolicy, error) {
	switch strings.ToLower(s) {
	case "drop":
		return Drop, nil
	case "block":
		return Block, nil
	}
	return 0, fmt.Errorf("bus: `on_full` (%q) must be drop or block", s)
}

// Defaults of Config, used where a field is zero.
const (
	DefaultMaxEvents          = 10_000
	DefaultMaxBytes           = 64 << 20
	DefaultMaxInFlight        = 1_000
	DefaultRedeliveryDelay    = time.Second
	DefaultMaxRedeliveryDelay = 30 * time.Second
)

// Config sizes and shapes a Bus. The zero value is valid: every zero field takes its default.
type Config struct {
	// MaxEvents bounds each subscriber's share: the events it has been given and has not acked yet
	// (queued, in flight, or waiting for redelivery). A message counts as the decimal number in its
	// event.MetadataEvents metadata, or as 1 when that is missing, not a number or below 1.
	// Default 10,000.
	MaxEvents int
	// MaxBytes bounds each subscriber's share in bytes: a message weighs len(Payload) plus the
	// lengths of its metadata keys and values. Default 64 MiB.
	MaxBytes int64
	// OnFull is what Publish does when a share is full. Default Drop.
	OnFull FullPolicy
	// MaxInFlight is how many messages a subscription may hold unacked at once (handed out, or nacked
	// and waiting for redelivery): a plain bound on messages, whatever events they carry, so with
	// one message per chunk of events it counts chunks. It lets a batching handler gather several
	// messages before it acks, and a Router (a goroutine per message) work on that many at once.
	// Acks are seen in hand-out order: a message acked before an older one still holds its slot
	// until the older one is acked or nacked. Default 1,000. With 1, a subscription gets its messages
	// one at a time and in publish order.
	MaxInFlight int
	// RedeliveryDelay is how long a nacked message waits before it is handed out again; each further
	// nack of the same message doubles the wait, up to MaxRedeliveryDelay. Default 1 s and 30 s.
	RedeliveryDelay    time.Duration
	MaxRedeliveryDelay time.Duration

	// Retain makes each topic keep its most recently accepted messages, up to MaxEvents and MaxBytes
	// (oldest evicted first), and start every new subscription with a copy of them: GoChannel's
	// Persistent, bounded; or a Kafka consumer that starts at the oldest retained offset. A message
	// published to a topic with no subscription is then kept for the next one instead of dropped.
	// It costs up to one more bound of memory per topic, and a re-created subscription sees the
	// retained messages again. Off by default: sluice subscribes its routes before it publishes.
	Retain bool
	// PreserveContext hands subscribers the publisher's message context (msg.Context() at Publish),
	// as GoChannel's PreserveContext does. By default a delivered message's context derives from
	// the Subscribe context and is cancelled once the message is acked or nacked, or the
	// subscription ends.
	PreserveContext bool
}

// DefaultConfig returns the configuration that New uses for a zero Config.
func DefaultConfig() Config {
	c := Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RedeliveryDelay == 0 {
		c.RedeliveryDelay = DefaultRedeliveryDelay
	}
	if c.MaxRedeliveryDelay == 0 {
		c.MaxRedeliveryDelay = max(DefaultMaxRedeliveryDelay, c.RedeliveryDelay)
	}
}

// Validate reports the first field that is out of range, naming its configuration key and value.
// Zero fields are valid: they stand for their defaults.
func (c Config) Validate() error {
	switch {
	case c.MaxEvents < 0:
		return fmt.Errorf("bus: `max_events` (%d) must be positive", c.MaxEvents)
	case c.MaxBytes < 0:
		return fmt.Errorf("bus: `max_bytes` (%d) must be positive", c.MaxBytes)
	case c.OnFull != Drop && c.OnFull != Block:
		return fmt.Errorf("bus: `on_full` (%d) must be drop (%d) or block (%d)", int(c.OnFull), int(Drop), int(Block))
	case c.MaxInFlight < 0:
		return fmt.Errorf("bus: `max_in_flight` (%d) must be positive", c.MaxInFlight)
	case c.RedeliveryDelay < 0:
		return fmt.Errorf("bus: `redelivery_delay` (%s) must be positive", c.RedeliveryDelay)
	case c.MaxRedeliveryDelay < 0:
		return fmt.Errorf("bus: `max_redelivery_delay` (%s) must be positive", c.MaxRedeliveryDelay)
	case c.RedeliveryDelay > 0 && c.MaxRedeliveryDelay > 0 && c.MaxRedeliveryDelay < c.RedeliveryDelay:
		return fmt.Errorf("bus: `max_redelivery_delay` (%s) must be greater or equal to `redelivery_delay` (%s)",
			c.MaxRedeliveryDelay, c.RedeliveryDelay)
	}
	return nil
}

// redeliveryDelay is the wait before the hand-out that follows the n-th nack (n >= 1).
func (c *Config) redeliveryDelay(n int) time.Duration {
	d := c.RedeliveryDelay
	for i := 1; i < n && d < c.MaxRedeliveryDelay; i++ {
		d *= 2
	}
	return min(d, c.MaxRedeliveryDelay)
}
