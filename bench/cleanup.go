package bench

import (
	"context"

	"github.com/sluicelog/sluice/internal/brokerclean"
)

// removeStock removes what a stock set declared on a long-lived broker: the Redis stream, the
// RabbitMQ queue (named by the topic), the JetStream stream (named by the topic).
func removeStock(ctx context.Context, driver, url, topic string) error {
	switch driver {
	case "redis":
		return brokerclean.DeleteKey(ctx, url, topic)
	case "nats":
		return brokerclean.DeleteStream(ctx, url, topic)
	case "amqp":
		return brokerclean.DeleteQueues(url, []string{topic})
	}
	return nil
}
