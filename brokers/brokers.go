// Package brokers owns the seam between sluice and a message broker that replaces the in-process bus
// when a service outgrows one machine: the Broker interface (a Watermill Publisher, a Subscriber per
// consumer group, and the topology a topic needs), the registry of broker drivers (bus.driver: kafka,
// redis, amqp, nats, postgres; each a package of its own under brokers/ that registers itself), and
// the adapter that makes a Broker of any Watermill Publisher and Subscriber (FromWatermill).
//
// What travels is what the in-process bus carries: one message per chunk of events (package event's
// bus message format: NDJSON payload, event.MetadataEvents and event.MetadataFormat in the metadata),
// its UUID stable across retries. A web node (sluice.New with a broker) forwards its chunks to the
// broker and removes a chunk from its local bus only once Publish returned nil; a worker
// (sluice.NewWorker) subscribes once per route, each route in a consumer group of its own, and
// acknowledges a chunk only after the route's sink wrote it.
//
// This package links no broker client: a driver's dependencies are linked only where its package is
// imported (cmd/sluice imports every driver through brokers/all).
package brokers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Broker is a message broker opened for one process.
type Broker interface {
	// Publisher publishes chunk messages. Publish must return nil only once the broker holds every
	// message durably (Kafka acks=all, RabbitMQ publisher confirms, a JetStream publish ack, the reply
	// to XADD, a committed transaction): the caller then forgets them. It must keep the message's
	// UUID and metadata.
	Publisher() message.Publisher
	// Subscriber returns a subscriber whose subscriptions are members of the consumer group group:
	// the members of one group share the messages of a topic (each message goes to one of them), and
	// every group gets every message. A message not acknowledged (nacked, or its consumer gone) is
	// offered again, to this member or another.
	Subscriber(group string) (message.Subscriber, error)
	// Declare makes topic and the consumer groups that read it exist (a queue per group, a stream,
	// durable consumers, partitions), so that nothing published before a worker first subscribes is
	// lost. Both sides call it at start; it must be idempotent.
	Declare(ctx context.Context, topic string, groups []string) error
	// Close closes the publisher and every subscriber the broker made.
	Close() error
}

// Driver is a kind of broker that bus.driver names. Its package registers it with Register in an
// init function and owns everything about it: its settings (yaml keys under bus.<name>, defaults,
// Validate), how it reads bus.url, and its connections.
type Driver struct {
	// Name is what bus.driver says ("kafka"), and the settings' section (bus.kafka).
	Name string
	// URL says, for people, what bus.url holds for this driver.
	URL string
	// Settings returns a pointer to the driver's default settings: a struct with yaml tags and a
	// Validate() error method. The configuration holds it as the section bus.<Name>.
	Settings func() any
	// Open opens the broker at url with settings (the struct Settings returned, as configured and
	// validated; not the pointer). It may fail when the broker is unreachable: a web node then keeps
	// serving and retries (see sluice.New).
	Open func(ctx context.Context, url string, settings any, log watermill.LoggerAdapter) (Broker, error)
}

var (
	mu      sync.RWMutex
	drivers = map[string]Driver{}
)

// Memory is the name of the in-process bus (bus.driver: memory), which is no broker.
const Memory = "memory"

// Register makes a driver known by its name. It panics when the name is empty, "memory" or taken, or
// Open is nil: a programming error found at init.
func Register(d Driver) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case d.Name == "" || d.Name == Memory:
		panic(fmt.Sprintf("brokers: Register: invalid driver name %q", d.Name))
	case d.Open == nil:
		panic("brokers: Register " + d.Name + ": Open is nil")
	}
	if _, dup := drivers[d.Name]; dup {
		panic("brokers: Register called twice for driver " + d.Name)
	}
	drivers[d.Name] = d
}

// Lookup returns the driver registered under name.
func Lookup(name string) (Driver, bool) {
	mu.RLock()
	defer mu.RUnlock()
	d, ok := drivers[name]
	return d, ok
}

// Names returns the registered drivers' names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// FromWatermill makes a Broker of a Watermill Publisher and a function that returns a Subscriber in a
// consumer group (for example a team's own watermill-kafka set-up, its ConsumerGroup set to group).
// Declare does nothing: the topology is the caller's. Close closes nothing either: the publisher and
// the subscribers are the caller's, to close after the pipeline (which may share them with others).
func FromWatermill(pub message.Publisher, subscriber func(group string) (message.Subscriber, error)) Broker {
	return &watermillBroker{pub: pub, newSub: subscriber}
}

type watermillBroker struct {
	pub    message.Publisher
	newSub func(group string) (message.Subscriber, error)
}

func (b *watermillBroker) Publisher() message.Publisher { return b.pub }

func (b *watermillBroker) Subscriber(group string) (message.Subscriber, error) {
	if b.newSub == nil {
		return nil, errors.New("brokers: this broker was given no subscriber (FromWatermill with a nil subscriber function)")
	}
	return b.newSub(group)
}

func (b *watermillBroker) Declare(context.Context, string, []string) error { return nil }

func (b *watermillBroker) Close() error { return nil }
