// Package kafka owns the Kafka broker driver (bus.driver: kafka): its settings (the section
// bus.kafka), how it reads bus.url (a comma-separated list of bootstrap brokers, host:port), the
// topic and the consumer groups it declares, and its Publisher and Subscribers, written on franz-go
// (github.com/twmb/franz-go/pkg/kgo). It registers itself: import it for its side effect (cmd/sluice
// does, through brokers/all).
//
// # What it guarantees
//
//   - Durability: Publish returns nil only once every partition leader acknowledged the records
//     with acks=all (every in-sync replica has them), from an idempotent producer: the client's own
//     retries never write a record twice. A Publish that fails (the broker unreachable for
//     bus.kafka.publish_timeout) may still have written some records: publishing them again
//     duplicates them at new offsets, with the same message UUID.
//   - Delivery: at least once, never loss. A consumer's offsets are committed only up to the first
//     message not yet acknowledged (a contiguous-ack watermark per partition), every
//     bus.kafka.commit_interval, when a partition is revoked and when a subscription closes. What a
//     consumer had not acknowledged when it died or closed is delivered again to the member that
//     gets its partition; what was acknowledged after the last commit may be delivered again too
//     (a kill -9 redelivers up to commit_interval of acknowledged messages, plus those in flight).
//     A nacked message is offered again by the same subscription after bus.kafka.redelivery_delay,
//     doubling up to 32 times that, while the other messages go on.
//   - Ordering: none across messages handed out at once. Up to bus.kafka.max_in_flight messages
//     per subscription are unacknowledged at a time, from any of its partitions, in fetch order;
//     sluice's stores do not need order (rows and archive objects are keyed by event ids).
//   - Hand-over: a subscription that closes leaves its group at once (unless it is a static member,
//     bus.kafka.instance_id) and its partitions move within a rebalance, about a second; a consumer
//     killed with kill -9 is declared dead after bus.kafka.session_timeout (10 s) and its
//     partitions move then. A static member (instance_id set, unique per worker and stable across
//     its restarts) that comes back within the session timeout gets its partitions back with no
//     rebalance at all.
//   - A killed broker: records it acknowledged are in its log (with acks=all, on every in-sync
//     replica); publishes wait and retry until it is back or publish_timeout passes; consumers
//     resume from their committed offsets.
//
// # Why not the stock watermill-kafka adapter
//
// watermill-kafka v3 (sarama) hands out one unacknowledged message per partition, commits either
// every second whatever was acknowledged so far (auto-commit: fine) or after every single message
// (about 10 messages/s against kfake), and a nack blocks its partition. A worker gathers many
// chunks into one sink write and acknowledges them together, so it needs many messages in flight:
// this subscriber hands out max_in_flight of them and commits the watermark (against kfake, 64 KiB
// chunks gathered into 20 ms writes: 476-571 chunks/s against the stock adapter's 69-76; see
// docs/SCALING.md). The stock adapter still works through brokers.FromWatermill: the package's tests
// run the conformance suite over it, set up as stock_test.go shows (protocol version, acks=all,
// idempotence, oldest offset, static membership). The two interoperate: the Publisher writes the
// message UUID in watermill-kafka's header (_watermill_message_uuid) and the metadata as headers, as
// its default marshaler does.
//
// This package must not import the root sluice package, publishers or the other drivers.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/internal/closing"
)

// Name is the driver's name: bus.driver's value and the settings' section, bus.kafka.
const Name = "kafka"

func init() {
	brokers.Register(brokers.DriverOf(Name,
		"a comma-separated list of bootstrap brokers, host:port (127.0.0.1:9092,10.0.0.2:9092)",
		DefaultSettings, Open))
}

// ParseURL returns the brokers that bus.url lists. The error names bus.url and what is wrong.
func ParseURL(url string) ([]string, error) {
	var seeds []string
	for part := range strings.SplitSeq(url, ",") {
		addr := strings.TrimSpace(part)
		host, port, err := net.SplitHostPort(addr)
		if err == nil && host == "" {
			err = errors.New("no host")
		}
		if n, perr := strconv.Atoi(port); err == nil && (perr != nil || n <= 0 || n > 65535) {
			err = fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		if err != nil {
			return nil, fmt.Errorf("bus.url %q: broker %q is not host:port (%v); for bus.driver kafka bus.url is a comma-separated list of brokers, e.g. 127.0.0.1:9092", url, addr, err)
		}
		seeds = append(seeds, addr)
	}
	return seeds, nil
}

// Broker is a Kafka cluster opened by Open: one client publishes and declares, and every Subscribe
// of its Subscribers has a client (a group member) of its own.
type Broker struct {
	seeds    []string
	settings Settings
	log      watermill.LoggerAdapter
	client   *kgo.Client // produces and administers
	pub      *publisher

	open closing.Set // the subscribers
}

// Open connects to the brokers that url lists (bus.url) with settings, and checks that one of them
// answers within ctx. Its errors name bus.url or the bus.kafka key at fault.
func Open(ctx context.Context, url string, s Settings, log watermill.LoggerAdapter) (*Broker, error) {
	seeds, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("bus.kafka: %w", err)
	}
	if log == nil {
		log = watermill.NopLogger{}
	}
	b := &Broker{seeds: seeds, settings: s, log: log}
	b.client, err = kgo.NewClient(b.producerOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka: bus.kafka: %w", err)
	}
	if err := b.client.Ping(ctx); err != nil {
		b.client.Close()
		return nil, fmt.Errorf("kafka: no broker of bus.url %q answers: %w", url, err)
	}
	b.pub = &publisher{client: b.client, settings: s}
	return b, nil
}

// commonOpts are the options of every client: the brokers, the client id, the logger.
func (b *Broker) commonOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(b.seeds...),
		kgo.ClientID(b.settings.ClientID),
		kgo.WithLogger(logger{b.log}),
	}
}

// producerOpts: acks=all and idempotence (kgo's defaults, stated), the batch cap that
// max_message_bytes allows, the compression, and publish_timeout as the record delivery timeout.
func (b *Broker) producerOpts() []kgo.Opt {
	return append(b.commonOpts(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(int32(b.settings.MaxMessageBytes)),
		kgo.BrokerMaxWriteBytes(int32(b.settings.MaxMessageBytes)+1<<20),
		kgo.ProducerBatchCompression(compressions[b.settings.Compression]),
		kgo.RecordDeliveryTimeout(b.settings.PublishTimeout),
		kgo.ProducerLinger(0), // Publish waits for its records: lingering only delays the caller
	)
}

// Publisher returns the broker's publisher; Publish returns once every record is acknowledged by all
// in-sync replicas.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a subscriber in the consumer group group (each of its Subscribe calls is a member
// of the group with a client of its own).
func (b *Broker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("kafka: Subscriber: empty consumer group")
	}
	s := &subscriber{broker: b, group: group}
	if !b.open.Add(s.Close) {
		return nil, errors.New("kafka: Subscriber: the broker is closed")
	}
	return s, nil
}

// Close closes every subscriber the broker made (committing what was acknowledged), then the
// publisher.
func (b *Broker) Close() error { return b.open.Close(b.pub.Close) }

var _ brokers.Broker = (*Broker)(nil)

// logger hands franz-go's warnings and errors to Watermill's logger.
type logger struct{ log watermill.LoggerAdapter }

func (l logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := watermill.LogFields{}
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields[fmt.Sprint(keyvals[i])] = keyvals[i+1]
	}
	if level == kgo.LogLevelError {
		l.log.Error("kafka: "+msg, nil, fields)
		return
	}
	l.log.Info("kafka: "+msg, fields)
}
