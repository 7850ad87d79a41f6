package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
)

// perEventUploads is how many one-blob-per-event uploads run at once.
const perEventUploads = 8

// runBlob writes the same generated events into Azurite with each design, each into a fresh container,
// and checks that each stored every event once.
func runBlob(ctx context.Context, cfg Config, pl plan, pr *progress) (*BlobResults, error) {
	res := &BlobResults{}
	for _, d := range []struct {
		name   string
		events int
		out    *BlobThroughput
		run    func(context.Context, string, string, []*event.Event, *progress) (BlobThroughput, error)
	}{
		{"sluice", pl.blobEvents, &res.Sluice, blobSluice},
		{"one blob per event", pl.perEventBlobs, &res.PerEventBlob, blobPerEvent},
		{"one large upload", pl.blobEvents, &res.OneUpload, blobOneUpload},
	} {
		pr.say("blob: %s, %d events", d.name, d.events)
		container := uniqueName("bench")
		t, err := d.run(ctx, cfg.Azurite, container, generate(d.events), pr)
		deleteContainer(cfg.Azurite, container)
		if err != nil {
			return res, fmt.Errorf("%s: %w", d.name, err)
		}
		t.Events = d.events
		t.EventsPerSecond = div(float64(t.Events), t.Seconds)
		t.BlobsPer1000Events = div(float64(t.Blobs)*1000, float64(t.Events))
		*d.out = t
		pr.say("blob: %s: %.0f events/s, %.1f blobs per 1,000 events, %.0f stored bytes/event",
			d.name, t.EventsPerSecond, t.BlobsPer1000Events, t.StoredBytesPerEvent)
	}
	return res, nil
}

func openContainer(ctx context.Context, connectionString, container string) (*azurestore.Store, error) {
	return azurestore.Open(ctx, azurestore.Config{ConnectionString: connectionString, Container: container})
}

// blobSluice is the pipeline with one route taking every event to the archive in Azurite.
func blobSluice(ctx context.Context, azurite, container string, events []*event.Event, pr *progress) (BlobThroughput, error) {
	cfg := routeConfig(config.SinkBlob)
	cfg.Postgres.Enabled = false
	cfg.Blob.ConnectionString = azurite
	cfg.Blob.Container = container
	run, err := runPipeline(ctx, cfg, events, pr)
	if err != nil {
		return BlobThroughput{}, err
	}
	t := BlobThroughput{Seconds: run.cost.seconds, ClientCPUSeconds: run.cost.clientCPU}
	store, err := openContainer(ctx, azurite, container)
	if err != nil {
		return t, err
	}
	defer store.Close()
	t.Blobs, t.StoredBytesPerEvent, err = checkArchive(ctx, store, events)
	return t, err
}

// checkArchive fails unless the container's gzip NDJSON blobs hold every event exactly once; it
// returns the blobs and their bytes per event.
func checkArchive(ctx context.Context, store *azurestore.Store, events []*event.Event) (blobs int, bytesPerEvent float64, err error) {
	names, err := store.List(ctx, "")
	if err != nil {
		return 0, 0, err
	}
	want := make(map[uuid.UUID]bool, len(events))
	for _, e := range events {
		want[e.ID] = true
	}
	var size, lines int
	for _, name := range names {
		data, err := store.Get(ctx, name)
		if err != nil {
			return 0, 0, err
		}
		stored, err := blobsink.Decode(data)
		if err != nil {
			return 0, 0, fmt.Errorf("blob %s: %w", name, err)
		}
		for _, e := range stored {
			if !want[e.ID] {
				return 0, 0, fmt.Errorf("blob %s: event %s was not written, or was written twice", name, e.ID)
			}
			want[e.ID] = false
		}
		size += len(data)
		lines += len(stored)
	}
	if lines != len(events) {
		return 0, 0, fmt.Errorf("%d blobs hold %d events, want %d", len(names), lines, len(events))
	}
	return len(names), div(float64(size), float64(lines)), nil
}

// blobPerEvent is the design sluice replaces: each event its own JSON blob, perEventUploads at a time.
func blobPerEvent(ctx context.Context, azurite, container string, events []*event.Event, pr *progress) (BlobThroughput, error) {
	store, err := openContainer(ctx, azurite, container)
	if err != nil {
		return BlobThroughput{}, err
	}
	defer store.Close()
	var size atomic.Int64
	c, err := eachEvent(events, perEventUploads, pr, "uploaded", func(e *event.Event) error {
		data, err := e.AppendJSON(nil)
		if err == nil {
			err = store.Put(ctx, e.TS.Format("2006/01/02/15/")+e.ID.String()+".json", data, "application/json", "")
		}
		size.Add(int64(len(data)))
		return err
	})
	t := BlobThroughput{Seconds: c.seconds, ClientCPUSeconds: c.clientCPU}
	if err != nil {
		return t, err
	}
	names, err := store.List(ctx, "")
	if err != nil {
		return t, err
	}
	if len(names) != len(events) {
		return t, fmt.Errorf("%d blobs, want %d", len(names), len(events))
	}
	t.Blobs = len(names)
	t.StoredBytesPerEvent = div(float64(size.Load()), float64(len(events)))
	return t, nil
}

// blobOneUpload is the ceiling: every event in one gzip NDJSON blob, uploaded at once. Only the upload
// is timed.
func blobOneUpload(ctx context.Context, azurite, container string, events []*event.Event, _ *progress) (BlobThroughput, error) {
	store, err := openContainer(ctx, azurite, container)
	if err != nil {
		return BlobThroughput{}, err
	}
	defer store.Close()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	var line []byte
	for _, e := range events {
		if line, err = e.AppendJSON(line[:0]); err != nil {
			return BlobThroughput{}, err
		}
		_, _ = zw.Write(append(line, '\n'))
	}
	if err := zw.Close(); err != nil {
		return BlobThroughput{}, err
	}
	m := startMeasure()
	if err := store.Put(ctx, "all.ndjson.gz", buf.Bytes(), "application/x-ndjson", "gzip"); err != nil {
		return BlobThroughput{}, err
	}
	c := m.done()
	t := BlobThroughput{Seconds: c.seconds, ClientCPUSeconds: c.clientCPU, Blobs: 1}
	_, t.StoredBytesPerEvent, err = checkArchive(ctx, store, events)
	return t, err
}
