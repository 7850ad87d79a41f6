package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicelog/sluice/brokers/kafka"
	"github.com/sluicelog/sluice/brokers/redis"
)

// stockSet is Watermill's own adapter for one broker, set up as a team that runs Watermill would: its
// Publisher, and a Subscriber per worker (each its own connection, as a worker process of its own
// would have), all in one consumer group (or its broker's equivalent), so that the workers share the
// work. The stock subscribers hand a router one message at a time per subscription (Kafka's, one per
// partition) and take the next once the last is acknowledged: that is the stock design.
type stockSet struct {
	publisher  message.Publisher
	subscriber func(worker int) (message.Subscriber, error)
	closers    []func() error
}

// close closes what the set opened, the last opened first.
func (s *stockSet) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// stockAdapters opens the stock set of each broker driver on topic, its subscribers in group. What
// they declare (a stream, a queue, a table) removeStock removes after the measurement.
var stockAdapters = map[string]func(ctx context.Context, url, topic, group string, logger watermill.LoggerAdapter) (*stockSet, error){
	"redis":    stockRedis,
	"amqp":     stockAMQP,
	"kafka":    stockKafka,
	"nats":     stockNATS,
	"postgres": stockPostgres,
}

// stockRedis is watermill-redisstream: XADD per Publish; per worker a Subscriber in the consumer
// group that reads an entry, hands it out and waits for its XACK's reply before it reads the next.
func stockRedis(_ context.Context, url, _, group string, logger watermill.LoggerAdapter) (*stockSet, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	s := &stockSet{}
	client := func() goredis.UniversalClient {
		c := goredis.NewClient(opts)
		s.closers = append(s.closers, c.Close)
		return c
	}
	s.publisher, err = redisstream.NewPublisher(redisstream.PublisherConfig{Client: client()}, logger)
	if err != nil {
		return nil, errors.Join(err, s.close())
	}
	s.closers = append(s.closers, s.publisher.Close)
	s.subscriber = func(w int) (message.Subscriber, error) {
		return redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: client(), ConsumerGroup: group,
			Consumer: fmt.Sprintf("worker-%d", w)}, logger)
	}
	return s, nil
}

// stockAMQP is watermill-amqp's durable queue (NewDurableQueueConfig: a durable queue named by the
// topic, its consumers competing, a prefetch of one), with publisher confirms: a Publish returns
// once RabbitMQ confirmed the message.
func stockAMQP(_ context.Context, url, _, _ string, logger watermill.LoggerAdapter) (*stockSet, error) {
	c := wamqp.NewDurableQueueConfig(url)
	c.Publish.ConfirmDelivery = true
	c.Publish.ChannelPoolSize = busPublishers
	pub, err := wamqp.NewPublisher(c, logger)
	if err != nil {
		return nil, err
	}
	return &stockSet{publisher: pub, closers: []func() error{pub.Close},
		subscriber: func(int) (message.Subscriber, error) { return wamqp.NewSubscriber(c, logger) }}, nil
}

// stockKafka is watermill-kafka (sarama) set up as brokers/kafka's stock test does (acks from every
// in-sync replica, an idempotent producer, offsets from the oldest, committed every second), on a
// topic declared by sluice's kafka driver with its partitions (6): the stock subscriber handles one
// message per partition at a time.
func stockKafka(ctx context.Context, url, topic, group string, logger watermill.LoggerAdapter) (*stockSet, error) {
	b, err := kafka.Open(ctx, url, kafka.DefaultSettings(), logger)
	if err != nil {
		return nil, err
	}
	err = b.Declare(ctx, topic, []string{group})
	if err = errors.Join(err, b.Close()); err != nil {
		return nil, err
	}
	addrs := []string{url}
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{Brokers: addrs, Marshaler: wkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: stockSaramaConfig("")}, logger)
	if err != nil {
		return nil, err
	}
	return &stockSet{publisher: pub, closers: []func() error{pub.Close},
		subscriber: func(w int) (message.Subscriber, error) {
			return wkafka.NewSubscriber(wkafka.SubscriberConfig{Brokers: addrs, ConsumerGroup: group,
				Unmarshaler: wkafka.DefaultMarshaler{}, OverwriteSaramaConfig: stockSaramaConfig(fmt.Sprintf("worker-%d", w))}, logger)
		}}, nil
}

// stockSaramaConfig is brokers/kafka's stockSaramaConfig (a test's, not importable): the protocol
// version stated (kfake refuses the old ones sarama picks otherwise), acks=all with an idempotent
// producer, the oldest offset for a new group, offsets auto-committed every second, and static
// membership.
func stockSaramaConfig(instanceID string) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.ClientID = "sluice-bench-stock"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Return.Successes = true
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = time.Second
	c.Consumer.Group.InstanceId = instanceID
	return c
}

// stockNATS is watermill-nats with JetStream: a stream named by the topic (file storage) that the
// adapter provisions, a publish ack awaited per Publish, and per worker a durable queue subscription
// of the group, each message acknowledged synchronously (AckSync, the default) before the next.
func stockNATS(_ context.Context, url, _, group string, logger watermill.LoggerAdapter) (*stockSet, error) {
	js := wnats.JetStreamConfig{AutoProvision: true, DurablePrefix: group,
		SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit()}}
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: url, Marshaler: &wnats.NATSMarshaler{}, JetStream: js}, logger)
	if err != nil {
		return nil, err
	}
	return &stockSet{publisher: pub, closers: []func() error{pub.Close},
		subscriber: func(int) (message.Subscriber, error) {
			return wnats.NewSubscriber(wnats.SubscriberConfig{URL: url, QueueGroupPrefix: group,
				Unmarshaler: &wnats.NATSMarshaler{}, JetStream: js, CloseTimeout: 10 * time.Second,
				AckWaitTimeout: 30 * time.Second}, logger)
		}}, nil
}

// stockPostgres is watermill-sql v4 with its default PostgreSQL schema (a table per topic) and
// offsets adapter (a consumer group's offset in a table of its own), on a pgx pool.
func stockPostgres(ctx context.Context, url, _, group string, logger watermill.LoggerAdapter) (*stockSet, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	s := &stockSet{closers: []func() error{func() error { pool.Close(); return nil }}}
	db := wsql.BeginnerFromPgx(pool)
	s.publisher, err = wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{},
		AutoInitializeSchema: true}, logger)
	if err != nil {
		return nil, errors.Join(err, s.close())
	}
	s.closers = append(s.closers, s.publisher.Close)
	s.subscriber = func(int) (message.Subscriber, error) {
		return wsql.NewSubscriber(db, wsql.SubscriberConfig{ConsumerGroup: group,
			SchemaAdapter: wsql.DefaultPostgreSQLSchema{}, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true}, logger)
	}
	return s, nil
}
