package subscribers_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// printSink prints each batch it is given.
type printSink struct{}

func (printSink) Name() string { return "print" }
func (printSink) Close() error { return nil }
func (printSink) Write(_ context.Context, b subscribers.Batch) error {
	fmt.Printf("wrote a batch of %d events\n", len(b.Events))
	return nil
}

// A route as sluice assembles it: a router handler subscribes to the bus through a BatchSubscriber,
// so it is called once per batch of chunks, and a Writer writes each batch to the sink. Of three chunks
// of 40 events, the first two make a batch (the policy allows 100 events: the third would overflow it,
// so it starts the next batch, written after max_wait).
func ExampleBatchSubscriber() {
	b, _ := bus.New(bus.Config{}, nil)
	batches, _ := subscribers.NewBatchSubscriber(b, subscribers.BatchPolicy{
		MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond, MaxConcurrentWrites: 1})
	writer, _ := subscribers.NewWriter(subscribers.WriterConfig{Route: "archive", Sink: printSink{}})

	router, _ := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	router.AddConsumerHandler("archive", "logs.archive", batches, writer.Handle)
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()

	for range 3 {
		var events []*event.Event
		for range 40 {
			events = append(events, event.New(event.LevelInfo, event.KindApp, "hello"))
		}
		payload, _ := event.Encode(events...)
		msg := message.NewMessage(event.NewID().String(), payload)
		msg.Metadata.Set(event.MetadataEvents, "40")
		msg.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
		_ = b.Publish("logs.archive", msg)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.Drain(ctx) // every chunk acknowledged: its batch is written
	_ = router.Close()
	// Output:
	// wrote a batch of 80 events
	// wrote a batch of 40 events
}

// A sink checks a batch before it writes it: nothing to do for an empty batch, and a nil event is
// invalid, permanently (the Writer then splits the batch down to it and dead-letters it).
func ExampleBatch_Check() {
	good := subscribers.NewBatch([]*event.Event{event.New(event.LevelInfo, event.KindApp, "hello")})
	empty, err := good.Check("mysink")
	fmt.Println(empty, err)

	empty, err = subscribers.Batch{}.Check("mysink")
	fmt.Println(empty, err)

	_, err = subscribers.Batch{Events: []*event.Event{nil}}.Check("mysink")
	fmt.Println(subscribers.IsPermanent(err), errors.Is(err, subscribers.ErrInvalidEvent))
	// Output:
	// false <nil>
	// true <nil>
	// true true
}
