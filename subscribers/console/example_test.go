package console_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/console"
)

// exampleEvents are an HTTP request and an application record, at fixed times and with fixed ids.
func exampleEvents() []*event.Event {
	ts := time.Date(2025, 3, 14, 9, 26, 53, 120_000_000, time.UTC)
	return []*event.Event{
		{ID: uuid.MustParse("01950000-0000-7000-8000-000000000001"), TS: ts, Level: event.LevelInfo,
			Kind: event.KindHTTP, Message: "GET /api/v1/orders/:id 200", Method: "GET",
			Route: "/api/v1/orders/:id", Path: "/api/v1/orders/1042", Status: 200, DurationMS: 12.5,
			RequestID: "7d1c2b4e"},
		{ID: uuid.MustParse("01950000-0000-7000-8000-000000000002"), TS: ts.Add(time.Millisecond),
			Level: event.LevelWarn, Kind: event.KindApp, Message: "payment provider slow",
			Attrs: map[string]any{"attempt": 2, "provider": "acme-pay", "cache": map[string]any{"hits": 14},
				"note": "retry\nin 2s"}},
	}
}

// What a developer watches: the text format, one line per event. Groups of attributes are flattened
// with dots, and what a terminal would act on is escaped (the newline in note).
func Example() {
	sink, err := console.NewWriter(os.Stdout, console.Config{Format: console.FormatText})
	if err != nil {
		panic(err)
	}
	defer sink.Close()

	batch := subscribers.NewBatch(exampleEvents())
	for range 2 { // the second write is a retry of the same batch: the sink remembers it, nothing is printed
		if err := sink.Write(context.Background(), batch); err != nil {
			panic(err)
		}
	}
	// Output:
	// 2025-03-14T09:26:53.120Z INFO  GET /api/v1/orders/1042 200 12.5ms 7d1c2b4e
	// 2025-03-14T09:26:53.121Z WARN  payment provider slow attempt=2 cache.hits=14 note="retry\nin 2s" provider=acme-pay
}

// A file target in the default format: one JSON line per event, appended, which every tool that reads
// NDJSON (jq, the other sinks' decoders) reads back.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "sluice-console-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "events.ndjson")

	sink, err := console.New(console.Config{Target: path}) // or "stdout", "stderr"
	if err != nil {
		panic(err)
	}
	if err := sink.Write(context.Background(), subscribers.NewBatch(exampleEvents()[:1])); err != nil {
		panic(err)
	}
	if err := sink.Close(); err != nil {
		panic(err)
	}

	data, _ := os.ReadFile(path)
	fmt.Print(string(data))
	// Output:
	// {"id":"01950000-0000-7000-8000-000000000001","ts":"2025-03-14T09:26:53.12Z","level":"INFO","kind":"http","message":"GET /api/v1/orders/:id 200","request_id":"7d1c2b4e","method":"GET","route":"/api/v1/orders/:id","path":"/api/v1/orders/1042","status":200,"duration_ms":12.5}
}

// Validate names the key at fault and its value.
func ExampleConfig_Validate() {
	for _, cfg := range []console.Config{
		{Format: "xml"},
		{Color: true},
		{Target: "STDERR"},
	} {
		fmt.Println(cfg.Validate())
	}
	// Output:
	// `format` ("xml") must be "json" or "text"
	// `color` (true) needs `format` "text", not "json": JSON lines are never colored
	// `target` ("STDERR") must be "stdout" or "stderr" in lower case (a file of that name is written as "./STDERR")
}
