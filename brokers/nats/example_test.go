package nats_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers/nats"
)

// The topic sluice.events is the stream sluice_2Eevents, and the group sluice.pg its durable
// consumer sluice_2Epg. A chunk published twice (a web node retrying after a lost ack) is stored
// once: its UUID is the message id JetStream deduplicates on.
func ExampleOpen() {
	fmt.Println(nats.StreamName("sluice.events"), nats.ConsumerName("sluice.pg"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := nats.Open(ctx, "nats://127.0.0.1:4222", nats.DefaultSettings(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	const topic, group = "sluice.example", "sluice.pg"
	if err := b.Declare(ctx, topic, []string{group}); err != nil { // web nodes and workers, at start
		fmt.Println(err)
		return
	}
	chunk := message.NewMessage(watermill.NewUUID(), []byte("{\"level\":\"ERROR\"}\n"))
	for range 2 {
		if err := b.Publisher().Publish(topic, chunk.Copy()); err != nil {
			fmt.Println(err)
			return
		}
	}
	sub, _ := b.Subscriber(group)
	chunks, _ := sub.Subscribe(ctx, topic)
	for {
		select {
		case m := <-chunks:
			fmt.Printf("%s", m.Payload)
			m.Ack() // once the sink wrote it
		case <-time.After(2 * time.Second):
			return
		}
	}
	// Output:
	// sluice_2Eevents sluice_2Epg
	// {"level":"ERROR"}
}
