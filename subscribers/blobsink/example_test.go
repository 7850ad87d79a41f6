package blobsink_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// A sink over a local directory (the embedded default when no Azure connection string is set). A batch
// spanning an hour boundary is stored as one blob per UTC hour; the names depend only on the events, so
// writing the batch again stores nothing new.
func Example() {
	dir, err := os.MkdirTemp("", "sluice-blobs-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	store, err := blobsink.NewDirStore(dir) // in production: blobsink.DefaultDir
	if err != nil {
		panic(err)
	}
	sink, err := blobsink.New(store, blobsink.Config{Prefix: "eu"})
	if err != nil {
		panic(err)
	}
	defer sink.Close()

	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }
	batch := subscribers.NewBatch([]*event.Event{
		{ID: uuid.MustParse("01950000-0000-7000-8000-000000000001"), TS: at("2025-03-14T09:59:58Z"),
			Level: event.LevelInfo, Kind: event.KindHTTP, Message: "GET /hello 200"},
		{ID: uuid.MustParse("01950000-0000-7000-8000-000000000002"), TS: at("2025-03-14T10:00:01Z"),
			Level: event.LevelError, Kind: event.KindHTTP, Message: "GET /fail 500"},
		{ID: uuid.MustParse("01950000-0000-7000-8000-000000000003"), TS: at("2025-03-14T11:00:02+01:00"),
			Level: event.LevelWarn, Kind: event.KindApp, Message: "payment provider slow"},
	})
	ctx := context.Background()
	for range 2 { // the second write is a replay: same names, nothing new stored
		if err := sink.Write(ctx, batch); err != nil {
			panic(err)
		}
	}

	names, err := store.List(ctx, "")
	if err != nil {
		panic(err)
	}
	for _, name := range names {
		data, _ := store.Get(ctx, name)
		events, _ := blobsink.Decode(data)
		fmt.Println(name, len(events), "events")
	}
	// Output:
	// eu/2025/03/14/09/4ad342e0-7a66-8390-aafe-7c4f0deb918c.ndjson.gz 1 events
	// eu/2025/03/14/10/edfcd8bf-c1fc-897c-be2d-eca368a3e148.ndjson.gz 2 events
}

// Retention deletes whole hour prefixes whose hour ends before the cutoff (here 02:00), and reports
// each with its objects and bytes; the hour that holds the cutoff is kept whole.
func ExamplePrune() {
	dir, err := os.MkdirTemp("", "sluice-prune-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := blobsink.NewDirStore(dir)
	if err != nil {
		panic(err)
	}
	sink, err := blobsink.New(store, blobsink.Config{})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	var events []*event.Event
	for h := 0; h < 4; h++ {
		e := event.New(event.LevelInfo, event.KindApp, "tick")
		e.TS = time.Date(2026, 1, 2, h, 30, 0, 0, time.UTC)
		events = append(events, e)
	}
	if err := sink.Write(ctx, subscribers.NewBatch(events)); err != nil {
		panic(err)
	}
	removed, oldest, err := blobsink.Prune(ctx, store, "logs/", time.Date(2026, 1, 2, 2, 15, 0, 0, time.UTC), false)
	if err != nil {
		panic(err)
	}
	for _, u := range removed {
		fmt.Println("removed", u.Name, u.Objects, "blob")
	}
	fmt.Println("oldest kept", oldest.Format(time.RFC3339))
	// Output:
	// removed logs/2026/01/02/00/ 1 blob
	// removed logs/2026/01/02/01/ 1 blob
	// oldest kept 2026-01-02T02:00:00Z
}
