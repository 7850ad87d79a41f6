package amqp_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers/amqp"
	"github.com/sluicelog/sluice/event"
)

// A web node and a worker over RabbitMQ: both declare the topic and the routes' consumer groups at
// start, the web node publishes a chunk (Publish returns once RabbitMQ confirmed it), and the worker's
// subscription in the route's group gets it and acknowledges it after writing it.
func ExampleOpen() {
	ctx := context.Background()
	b, err := amqp.Open(ctx, "amqp://guest:guest@127.0.0.1:5672/", amqp.DefaultSettings(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	const topic, group = "sluice.example", "sluice.postgres"
	if err := b.Declare(ctx, topic, []string{group}); err != nil {
		fmt.Println(err)
		return
	}
	chunk := message.NewMessage(event.NewID().String(), []byte(`{"level":"WARN","message":"slow"}`+"\n"))
	chunk.Metadata.Set(event.MetadataEvents, "1")
	if err := b.Publisher().Publish(topic, chunk); err != nil {
		fmt.Println(err)
		return
	}
	sub, err := b.Subscriber(group)
	if err != nil {
		fmt.Println(err)
		return
	}
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		fmt.Println(err)
		return
	}
	for got := range msgs {
		got.Ack()                   // after the write
		if got.UUID == chunk.UUID { // (an earlier run's chunk, left unacknowledged, comes first)
			fmt.Printf("queue %s: %s", amqp.QueueName(topic, group), got.Payload)
			fmt.Println("events:", got.Metadata.Get(event.MetadataEvents))
			break
		}
	}
	// Output:
	// queue sluice.example.sluice.postgres: {"level":"WARN","message":"slow"}
	// events: 1
}
