// Package amqp owns the RabbitMQ broker driver (bus.driver: amqp, bus.url:
// amqp://user:password@host:5672/vhost, settings bus.amqp): its topology, its Publisher and its
// Subscriber. It registers itself; import it for its side effect (brokers/all does).
//
// Topology: a topic is a durable fanout exchange named after it (bus.topic), and each consumer group
// a durable queue "<topic>.<group>" bound to it: every group gets every message, and the members of
// a group share its queue. Declare (which both sides call at start) and every subscription declare
// the exchange, the queues and their bindings: RabbitMQ drops what reaches an exchange with no queue,
// so a chunk published before its queue existed would be lost (1,000 of 1,000 in a probe).
//
// Queues are quorum queues by default (bus.amqp.queue_type): RabbitMQ's replicated queue type, which
// survives the loss of a minority of a cluster's nodes and writes a message to disk before it
// confirms it; classic queues live on one node (and classic mirroring is gone since RabbitMQ 4). A
// quorum queue drops a message after x-delivery-limit deliveries (RabbitMQ 4 defaults that to 20),
// so the driver always sets it (bus.amqp.delivery_limit, default 1,000,000). The type is fixed when
// a queue is first declared: changing queue_type later fails Declare with PRECONDITION_FAILED, and
// the queue has to be drained and deleted.
//
// The Publisher is this package's own, on amqp091-go: the stock watermill-amqp Publisher waits for
// each message's confirm in turn with no deadline (amqp091 ignores the context it is given), opens a
// channel per Publish by default, and publishes without the mandatory flag, so a message that no
// queue took is confirmed as if it were held. This one publishes every message of a call as
// persistent and mandatory on a confirm-mode channel of its own, waits for all the confirms at once
// within confirm_timeout (and the message's context), and returns an error for a nack, a return
// (ErrUnroutable), a closed channel or a timeout; while RabbitMQ blocks publishers (a memory or
// disk alarm) it fails at once instead of writing into a blocked socket.
//
// The Subscriber is this package's own too. The stock one, tried first, fails three ways: its
// marshaler refuses the numeric x-delivery-count header that quorum queues add to every redelivery,
// and the stock subscriber then requeues the chunk at once, forever, without handing it out (found
// by the conformance suite); while a chunk is handed out and not settled it does not notice that its
// connection dropped, so it stops consuming until the chunk is settled; and its reconnection races
// on the connection it replaces (the race detector reported it when a test dropped the connection).
// It also requeues a nacked chunk at once (a failing sink would spin) and hands out one chunk at a
// time. This one consumes each subscription on a connection of its own with prefetch
// bus.amqp.prefetch, hands out up to that many chunks at once (each acked or nacked on its own, so a
// worker can batch several), requeues a nacked chunk after nack_delay, and dials again (0.1 s
// doubling to 5 s) with the topology declared again when its connection drops or RabbitMQ cancels
// its consumer. Both read and write the stock marshaler's format (watermill-amqp's DefaultMarshaler:
// payload as body, UUID and metadata in headers), so stock watermill-amqp publishers and subscribers
// interoperate with them.
//
// What it guarantees: Publish returns nil once RabbitMQ has written every chunk to a durable queue
// of each group (persistent messages, publisher confirms). A chunk is acknowledged after the worker's
// write; a worker killed with kill -9 closes its connection (the kernel does), and RabbitMQ requeues
// its unacknowledged chunks (at most prefetch per subscription) at once, for another member; a
// worker whose machine vanished is dropped after about two heartbeats (bus.amqp.heartbeat, 10 s). A
// kill -9 of RabbitMQ loses nothing that was confirmed (0 of 3,697 confirmed chunks in a probe); a
// chunk whose confirm the crash cut off is published again by the web node, and stored once by the
// idempotent sinks. Publishes fail (the web node keeps its chunks) until RabbitMQ is back, and the
// subscriptions connect again. Order within a queue is publication order except for requeued chunks.
//
// This package must not import the root sluice package, bus/ or the publishers.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/internal/closing"
)

// Driver is the name bus.driver gives this driver, and its section's (bus.amqp).
const Driver = "amqp"

func init() {
	brokers.Register(brokers.DriverOf(Driver,
		"an AMQP 0-9-1 URL: amqp://user:password@host:5672/vhost (amqps:// for TLS)",
		DefaultSettings, Open))
}

// Broker is a RabbitMQ opened as sluice's bus.
type Broker struct {
	url      string
	settings Settings
	log      watermill.LoggerAdapter
	pub      *publisher
	blocked  atomic.Bool // RabbitMQ blocks this connection's publishes (connection.blocked)
	// declared, when set (by tests, before use), is told every exchange and queue declared.
	declared func(exchange string, queues []string)

	open closing.Set // the subscribers

	mu     sync.Mutex
	conn   *amqp091.Connection
	closed bool // the connection is closed for good: connection dials no more
}

// Open checks uri (bus.url) and connects to RabbitMQ, within ctx and confirm_timeout.
func Open(ctx context.Context, uri string, s Settings, log watermill.LoggerAdapter) (*Broker, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("bus.amqp: %w", err)
	}
	if _, err := amqp091.ParseURI(uri); err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // without the URL, which holds the password
		}
		return nil, fmt.Errorf("bus.url: not an AMQP URL (bus.driver is amqp; want %s): %w", "amqp://user:password@host:5672/vhost", err)
	}
	if log == nil {
		log = watermill.NopLogger{}
	}
	b := &Broker{url: uri, settings: s, log: log}
	b.pub = newPublisher(b)
	if _, err := b.connection(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// config is the connection's: the heartbeat and a dial bounded by confirm_timeout.
func (b *Broker) config() amqp091.Config {
	return amqp091.Config{
		Heartbeat:  b.settings.Heartbeat,
		Locale:     "en_US",
		Dial:       amqp091.DefaultDial(b.settings.ConfirmTimeout),
		Properties: amqp091.Table{"connection_name": "sluice"},
	}
}

// connection returns the broker's connection for publishing and declaring, dialled again when it
// dropped.
func (b *Broker) connection(ctx context.Context) (*amqp091.Connection, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("brokers/amqp: broker closed")
	}
	if b.conn != nil && !b.conn.IsClosed() {
		return b.conn, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := amqp091.DialConfig(b.url, b.config())
	if err != nil {
		return nil, fmt.Errorf("bus.url: RabbitMQ at %s does not answer: %w", redact(b.url), err)
	}
	b.blocked.Store(false)
	blocks := conn.NotifyBlocked(make(chan amqp091.Blocking, 1))
	go func() {
		for bl := range blocks {
			b.blocked.Store(bl.Active)
		}
	}()
	b.conn = conn
	return conn, nil
}

// Publisher returns the confirming publisher.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// QueueName is the queue of consumer group group on topic.
func QueueName(topic, group string) string { return topic + "." + group }

// queueArgs are the arguments every declaration of a group's queue gives (they must be equal each time).
func (b *Broker) queueArgs() amqp091.Table {
	if b.settings.QueueType == QueueClassic {
		return nil
	}
	return amqp091.Table{"x-queue-type": QueueQuorum, "x-delivery-limit": int64(b.settings.DeliveryLimit)}
}

// Declare declares topic's exchange and a queue bound to it for each group. It is idempotent.
func (b *Broker) Declare(ctx context.Context, topic string, groups []string) error {
	conn, err := b.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("brokers/amqp: open a channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	return b.declare(ch, topic, groups)
}

// declare declares, on ch, topic's exchange and each group's queue bound to it.
func (b *Broker) declare(ch *amqp091.Channel, topic string, groups []string) error {
	if err := declareExchange(ch, topic); err != nil {
		return fmt.Errorf("brokers/amqp: %w", err)
	}
	queues := make([]string, len(groups))
	for i, g := range groups {
		queues[i] = QueueName(topic, g)
	}
	if b.declared != nil {
		b.declared(topic, queues)
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, b.queueArgs()); err != nil {
			return fmt.Errorf("brokers/amqp: declare queue %q (bus.amqp.queue_type %s): %w (an existing queue keeps the type and arguments it was declared with)",
				q, b.settings.QueueType, err)
		}
		if err := ch.QueueBind(q, "", topic, false, nil); err != nil {
			return fmt.Errorf("brokers/amqp: bind queue %q to exchange %q: %w", q, topic, err)
		}
	}
	return nil
}

// Subscriber returns a subscriber in the consumer group group: each subscription consumes the
// group's queue on a connection of its own.
func (b *Broker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("brokers/amqp: empty consumer group")
	}
	s := &subscriber{b: b, group: group, closing: make(chan struct{})}
	if !b.open.Add(s.Close) {
		return nil, errors.New("brokers/amqp: broker closed")
	}
	return s, nil
}

// Close closes the subscribers, then the publisher and the connection.
func (b *Broker) Close() error { return b.open.Close(b.pub.Close, b.closeConnection) }

// closeConnection closes the connection for publishing and declaring, for good.
func (b *Broker) closeConnection() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.conn != nil && !b.conn.IsClosed() {
		return b.conn.Close()
	}
	return nil
}

// redact hides the password of an AMQP URL.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
