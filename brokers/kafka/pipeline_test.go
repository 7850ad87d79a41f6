package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// The whole pipeline over a team's stock watermill-kafka set-up (brokers.FromWatermill) against
// kfake: a web node (sluice.New) forwards its events in chunks, a worker (sluice.NewWorker) reads them
// in its route's consumer group and archives them; every event is archived once.
func TestPipelineOverStockWatermillKafka(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{Partitions: 6, AutoCreateTopics: true})
	dir := t.TempDir()
	cfg := sluice.DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Blob.Dir = dir
	cfg.Routes = []sluice.Route{{Name: "archive", Sink: "blob", Batch: sluice.DefaultRoutes()[1].Batch}}
	cfg.Bus.Topic = "sluice.stock." + uuid.NewString()[:8]
	cfg.Bus.Forward.Chunk.Linger = 50 * time.Millisecond
	quiet := sluice.WithLogger(slog.New(slog.DiscardHandler))

	web, err := sluice.New(context.Background(), cfg, quiet, sluice.WithBroker(stockBroker(t, k.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		if err := web.Publish(context.Background(), event.New(event.LevelInfo, event.KindApp, fmt.Sprintf("event %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := web.Close(ctx); err != nil {
		t.Fatalf("the web node did not forward everything: %v", err)
	}
	worker, err := sluice.NewWorker(context.Background(), cfg, quiet, sluice.WithBroker(stockBroker(t, k.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close(context.Background())
	store, err := blobsink.NewDirStore(filepath.Join(dir, cfg.Blob.Container))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uuid.UUID]int{}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		seen = map[uuid.UUID]int{}
		names, _ := store.List(context.Background(), "")
		for _, name := range names {
			data, err := store.Get(context.Background(), name)
			if err != nil {
				continue // being written
			}
			events, _ := blobsink.Decode(data)
			for _, e := range events {
				seen[e.ID]++
			}
		}
		if len(seen) == n || time.Now().After(deadline) {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d events archived", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("event %s archived %d times", id, c)
		}
	}
}
