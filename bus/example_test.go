package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

// A producer reserves room for each event as it adds it to an open chunk, and publishes the chunk
// under the sum of its reservations: the events count against the bound from the moment they are
// accepted, and an event that finds no room is refused at once.
func ExampleBus_Reserve() {
	b, _ := bus.New(bus.Config{MaxEvents: 3}, nil)
	defer b.Close()
	msgs, _ := b.Subscribe(context.Background(), "logs")

	var payload []byte
	var events, bytes int64
	for _, line := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`} {
		if err := b.Reserve("logs", 1, int64(len(line)+1)); err != nil {
			fmt.Println("dropped", line+":", err)
			continue
		}
		payload = append(append(payload, line...), '\n')
		events, bytes = events+1, bytes+int64(len(line)+1)
	}
	chunk := message.NewMessage("chunk-1", payload)
	chunk.Metadata.Set(event.MetadataEvents, strconv.FormatInt(events, 10))
	fmt.Println("publish chunk-1:", b.PublishReserved("logs", events, bytes, chunk))

	m := <-msgs
	fmt.Println("received", m.UUID, "with", m.Metadata.Get(event.MetadataEvents), "events")
	m.Ack()
	st := b.Stats()
	fmt.Println("reserved", st.ReservedEvents, "published events", st.PublishedEvents,
		"dropped events", st.DroppedEvents[bus.ReasonQueueFull], "dropped messages", st.Dropped[bus.ReasonQueueFull])
	// Output:
	// dropped {"n":4}: bus: topic "logs" full (queue_full)
	// publish chunk-1: <nil>
	// received chunk-1 with 3 events
	// reserved 0 published events 3 dropped events 1 dropped messages 0
}
