package bus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
)

// A bus bounded to 3 events per subscriber: a message carrying two events fits, the next does not
// until the first is acked. Drain waits for the acks; Close reports what was left.
func Example() {
	b, err := bus.New(bus.Config{MaxEvents: 3}, nil)
	if err != nil {
		panic(err)
	}
	msgs, err := b.Subscribe(context.Background(), "logs")
	if err != nil {
		panic(err)
	}

	batch := message.NewMessage("batch-1", []byte("{\"level\":\"INFO\"}\n{\"level\":\"WARN\"}\n"))
	batch.Metadata.Set(event.MetadataEvents, "2")
	fmt.Println("publish batch-1:", b.Publish("logs", batch))

	again := message.NewMessage("batch-2", batch.Payload)
	again.Metadata.Set(event.MetadataEvents, "2")
	err = b.Publish("logs", again)
	fmt.Println("publish batch-2:", err, errors.Is(err, bus.ErrFull))

	m := <-msgs
	fmt.Println("received", m.UUID, m.Metadata.Get(event.MetadataEvents), "events")
	m.Ack()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("drain:", b.Drain(ctx))
	fmt.Println("close:", b.Close(), "undelivered:", b.Undelivered())

	st := b.Stats()
	fmt.Println("published", st.Published, "events", st.PublishedEvents, "dropped", st.Dropped[bus.ReasonQueueFull])
	// Output:
	// publish batch-1: <nil>
	// publish batch-2: bus: topic "logs" full (queue_full) true
	// received batch-1 2 events
	// drain: <nil>
	// close: <nil> undelivered: 0
	// published 1 events 2 dropped 1
}

// Publisher gives the same bus another full-policy: here the request path drops while a backfill
// job waits for room.
func ExampleBus_Publisher() {
	b, _ := bus.New(bus.Config{MaxEvents: 1, OnFull: bus.Drop}, nil)
	defer b.Close()
	msgs, _ := b.Subscribe(context.Background(), "logs")

	fmt.Println(b.Publish("logs", message.NewMessage("1", nil)))
	fmt.Println(b.Publish("logs", message.NewMessage("2", nil)))

	backfill := b.Publisher(bus.Block)
	done := make(chan error)
	go func() { done <- backfill.Publish("logs", message.NewMessage("3", nil)) }()
	m := <-msgs
	m.Ack() // makes room: the blocked Publish returns
	fmt.Println(<-done)
	fmt.Println((<-msgs).UUID)
	// Output:
	// <nil>
	// bus: topic "logs" full (queue_full)
	// <nil>
	// 3
}
