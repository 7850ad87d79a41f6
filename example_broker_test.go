package sluice_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// Scaling out with a broker of your own: hand New (the web node) and NewWorker (the aggregation
// tier) any Watermill Publisher and Subscriber through brokers.FromWatermill. In production that is
// for example a watermill-kafka Publisher and a Subscriber whose ConsumerGroup is the group sluice
// asks for; here it is Watermill's in-memory GoChannel, where every subscription gets every message.
// The web node writes no store: it forwards its events in chunks, and the worker writes them.
func ExampleWithBroker() {
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)
	cfg := sluice.DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Blob.Dir = dir
	cfg.Routes = []sluice.Route{{Name: "archive", Sink: "blob"}}

	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	broker := brokers.FromWatermill(gc, func(group string) (message.Subscriber, error) { return gc, nil })
	quiet := sluice.WithLogger(slog.New(slog.DiscardHandler))

	web, err := sluice.New(context.Background(), cfg, quiet, sluice.WithBroker(broker))
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range 3 {
		_ = web.Publish(context.Background(), event.New(event.LevelInfo, event.KindApp, fmt.Sprintf("event %d", i)))
	}
	if err := web.Close(context.Background()); err != nil { // every event is in the broker now
		fmt.Println(err)
		return
	}

	worker, err := sluice.NewWorker(context.Background(), cfg, quiet, sluice.WithBroker(brokers.FromWatermill(nil,
		func(group string) (message.Subscriber, error) { return gc, nil })))
	if err != nil {
		fmt.Println(err)
		return
	}
	store, _ := blobsink.NewDirStore(filepath.Join(dir, "logs"))
	lines := 0
	for deadline := time.Now().Add(10 * time.Second); lines < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines = 0
		names, _ := store.List(context.Background(), "")
		for _, name := range names {
			data, _ := store.Get(context.Background(), name)
			events, _ := blobsink.Decode(data)
			lines += len(events)
		}
	}
	_ = worker.Close(context.Background())
	fmt.Println("web node routes:", web.Routes()[0].Name)
	fmt.Println("archived by the worker:", lines)
	// Output:
	// web node routes: broker
	// archived by the worker: 3
}
