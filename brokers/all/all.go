// Package all registers every broker driver of sluice (bus.driver: kafka, redis, amqp, nats,
// postgres): import it for its side effect, as cmd/sluice does. It owns nothing else; a program that
// needs one driver imports that driver's package instead, and links only its client.
package all

import (
	_ "github.com/sluicelog/sluice/brokers/amqp"     // bus.driver: amqp (RabbitMQ)
	_ "github.com/sluicelog/sluice/brokers/kafka"    // bus.driver: kafka
	_ "github.com/sluicelog/sluice/brokers/nats"     // bus.driver: nats (JetStream)
	_ "github.com/sluicelog/sluice/brokers/postgres" // bus.driver: postgres
	_ "github.com/sluicelog/sluice/brokers/redis"    // bus.driver: redis (Streams)
)
