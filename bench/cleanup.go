package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp091 "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicelog/sluice/brokers/amqp"
	natsdriver "github.com/sluicelog/sluice/brokers/nats"
	"github.com/sluicelog/sluice/brokers/redis"
)

// removeTopic removes from the broker at url what a measurement declared there: the topic and its
// consumer groups, with whatever they still hold (a Redis stream holds every chunk until a worker's
// next trim, 10 s after it starts; the measurements end sooner). A run then leaves a long-lived
// broker (this machine's Redis, RabbitMQ and NATS, or a user's) as it found it. Kafka (a kfake
// process of the run's own) and postgres (a database dropped after the run) need nothing.
func removeTopic(ctx context.Context, driver, url, topic string, groups []string) error {
	switch driver {
	case "redis":
		opts, err := redis.ParseURL(url)
		if err != nil {
			return err
		}
		c := goredis.NewClient(opts)
		defer c.Close()
		return c.Del(ctx, topic).Err()
	case "nats":
		return deleteStream(ctx, url, natsdriver.StreamName(topic))
	case "amqp":
		queues := make([]string, len(groups))
		for i, g := range groups {
			queues[i] = amqp.QueueName(topic, g)
		}
		return deleteQueues(url, queues, topic)
	}
	return nil
}

// removeStock removes what a stock set declared on a long-lived broker: the Redis stream, the
// RabbitMQ queue, the JetStream stream. Kafka (a kfake process of the run's own) and postgres (a
// database dropped after the run) need nothing.
func removeStock(ctx context.Context, driver, url, topic string) error {
	switch driver {
	case "redis":
		return removeTopic(ctx, driver, url, topic, nil) // the stream, as sluice's driver names it
	case "nats":
		return deleteStream(ctx, url, topic)
	case "amqp":
		return deleteQueues(url, []string{topic})
	}
	return nil
}

// deleteStream deletes a JetStream stream, with its consumers, if it exists.
func deleteStream(ctx context.Context, url, stream string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	err = js.DeleteStream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return err
}

// deleteQueues deletes RabbitMQ queues, and then exchanges, by name.
func deleteQueues(url string, queues []string, exchanges ...string) error {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	var errs []error
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
	}
	for _, x := range exchanges {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			errs = append(errs, fmt.Errorf("exchange %s: %w", x, err))
		}
	}
	return errors.Join(errs...)
}
