package logquery_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// A filter from the words a user types: what sluice logs --since 2h --level warn --status 5xx does.
func ExampleFilter() {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	since, _ := logquery.ParseTime("2h", now)
	levels, _ := logquery.ParseLevels("warn")
	status, _ := logquery.ParseStatus("404,5xx")
	f := logquery.Filter{Since: since, Levels: levels, Status: status, Path: "/api/*", Limit: 100}
	fmt.Println(f.Since.Format(time.RFC3339), f.Levels, f.Status, f.Validate())

	_, err := logquery.ParseStatus("5x")
	fmt.Println(err)
	// Output:
	// 2026-12-02T08:00:00Z [WARN ERROR] [{404 404} {500 599}] <nil>
	// "5x" is not a status (want a code such as 500, a class such as 5xx, or a range such as 400-499)
}

// Reading one request's events back from an archive in a local directory. Postgres is used the same
// way: logquery.NewPostgres(pool, logquery.PostgresConfig{}).
func ExampleArchive() {
	dir, _ := os.MkdirTemp("", "archive")
	defer os.RemoveAll(dir)
	store, _ := blobsink.NewDirStore(dir)
	sink, _ := blobsink.New(store, blobsink.Config{})
	at := time.Date(2026, 12, 2, 9, 59, 59, 0, time.UTC)
	var events []*event.Event
	for i, msg := range []string{"GET /orders/7 500", "payment failed", "GET /hello 200"} {
		e := event.New(event.LevelError, event.KindApp, msg)
		e.TS, e.RequestID = at.Add(time.Duration(i)*time.Second), "req-1"
		if i == 2 {
			e.RequestID = "req-2"
		}
		events = append(events, e)
	}
	_ = sink.Write(context.Background(), subscribers.NewBatch(events))

	archive, _ := logquery.NewArchive(store, logquery.ArchiveConfig{})
	res, err := archive.Query(context.Background(), logquery.Filter{Since: at.Add(-time.Hour), Until: at.Add(time.Hour), RequestID: "req-1"},
		func(e *event.Event) error {
			fmt.Println(e.TS.Format(time.TimeOnly), e.RequestID, e.Message)
			return nil
		})
	fmt.Println(res.Events, err)
	// Output:
	// 09:59:59 req-1 GET /orders/7 500
	// 10:00:00 req-1 payment failed
	// 2 <nil>
}
