// Package brokerclean owns removing from a long-lived broker (this machine's Redis, RabbitMQ and
// NATS, or a user's) what a test or a benchmark declared there: a topic's stream or queues and its
// consumer groups, with whatever they still hold. Kafka in the tests is a kfake process of the run's
// own and the postgres bus a database dropped afterwards: they need nothing.
package brokerclean

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

// Topic removes what sluice's driver declared for topic and groups (bus.group + "." + route) on the
// broker at url: the Redis stream (its groups with it), the JetStream stream (its consumers with
// it), the RabbitMQ queues of the groups and the topic's exchange. What is not there is no error.
func Topic(ctx context.Context, driver, url, topic string, groups []string) error {
	switch driver {
	case "redis":
		return DeleteKey(ctx, url, topic)
	case "nats":
		return DeleteStream(ctx, url, natsdriver.StreamName(topic))
	case "amqp":
		queues := make([]string, len(groups))
		for i, g := range groups {
			queues[i] = amqp.QueueName(topic, g)
		}
		return DeleteQueues(url, queues, topic)
	}
	return nil
}

// DeleteKey deletes a Redis key (a stream, with its consumer groups).
func DeleteKey(ctx context.Context, url, key string) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	return c.Del(ctx, key).Err()
}

// DeleteStream deletes a JetStream stream, with its consumers, if it exists.
func DeleteStream(ctx context.Context, url, stream string) error {
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

// DeleteQueues deletes RabbitMQ queues, and then exchanges, by name; one that does not exist is no
// error (RabbitMQ deletes nothing and says so).
func DeleteQueues(url string, queues []string, exchanges ...string) error {
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
