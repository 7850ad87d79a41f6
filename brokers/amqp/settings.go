package amqp

import (
	"errors"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// The queue types (bus.amqp.queue_type).
const (
	QueueQuorum  = "quorum"
	QueueClassic = "classic"
)

// Settings are the section bus.amqp of sluice's configuration (environment variables
// SLUICE_BUS_AMQP_<KEY>). This package owns their keys, defaults and validation.
type Settings struct {
	// QueueType is the type of each consumer group's queue: quorum (replicated on a cluster, written
	// to disk before the publisher's confirm) or classic (one node's, durable).
	QueueType string `yaml:"queue_type"`
	// DeliveryLimit is a quorum queue's x-delivery-limit: after this many deliveries a chunk is
	// dropped by RabbitMQ. RabbitMQ 4 drops after 20 unless told otherwise, so this driver always
	// sets it; the default, with nack_delay, is weeks of failed writes.
	DeliveryLimit int `yaml:"delivery_limit"`
	// Prefetch is how many chunks a subscription holds unacknowledged: RabbitMQ sends it that many
	// ahead of its acks, and it hands them all out at once (a worker may batch them).
	Prefetch int `yaml:"prefetch"`
	// NackDelay is how long a nacked chunk waits before it goes back to its queue (where the next
	// member takes it at once): without it a failing sink would make a tight loop of redeliveries.
	NackDelay time.Duration `yaml:"nack_delay"`
	// Heartbeat is the AMQP heartbeat: a consumer whose peer vanished without closing its
	// connection is dropped after about this long, and its unacknowledged chunks are requeued.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ConfirmTimeout bounds a Publish: the wait for the broker's confirms (and the dial).
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// PublishChannels is how many publishes a process runs at once, each on a channel of its own.
	PublishChannels int `yaml:"publish_channels"`
}

// DefaultSettings are the production defaults: quorum queues with a delivery limit of 1,000,000, 4
// chunks out at once per subscription, a nacked chunk requeued after 1 s, a 10 s heartbeat, 10 s for a publisher
// confirm, 4 publishing channels.
func DefaultSettings() Settings {
	return Settings{
		QueueType:       QueueQuorum,
		DeliveryLimit:   1_000_000,
		Prefetch:        4,
		NackDelay:       time.Second,
		Heartbeat:       10 * time.Second,
		ConfirmTimeout:  10 * time.Second,
		PublishChannels: 4,
	}
}

// Validate returns every problem of the settings, each a *subscribers.SettingError naming its key
// within bus.amqp.
func (s Settings) Validate() error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.QueueType != QueueQuorum && s.QueueType != QueueClassic {
		bad("queue_type", `"`+s.QueueType+`"`, `must be "quorum" or "classic"`)
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"delivery_limit", s.DeliveryLimit}, {"prefetch", s.Prefetch}, {"publish_channels", s.PublishChannels}} {
		if n.v <= 0 {
			bad(n.key, n.v, "must be positive")
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"nack_delay", s.NackDelay}, {"confirm_timeout", s.ConfirmTimeout}} {
		if d.v <= 0 {
			bad(d.key, d.v, "must be positive")
		}
	}
	if s.Heartbeat < time.Second {
		bad("heartbeat", s.Heartbeat, "must be at least 1s (AMQP counts heartbeats in whole seconds)")
	}
	return errors.Join(errs...)
}
