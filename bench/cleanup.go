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
		nc, err := nats.Connect(url)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		err = js.DeleteStream(ctx, natsdriver.StreamName(topic)) // its consumers with it
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		return err
	case "amqp":
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
		for _, g := range groups {
			if _, err := ch.QueueDelete(amqp.QueueName(topic, g), false, false, false); err != nil {
				errs = append(errs, fmt.Errorf("queue %s: %w", amqp.QueueName(topic, g), err))
			}
		}
		if err := ch.ExchangeDelete(topic, false, false); err != nil {
			errs = append(errs, fmt.Errorf("exchange %s: %w", topic, err))
		}
		return errors.Join(errs...)
	}
	return nil
}
