package pgsink_test

import (
	"context"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// Migrate the schema, then write a batch through a pool the caller owns. (It needs a running
// PostgreSQL, so it is compiled, not run.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // the sink does not close a pool it was given

	applied, err := pgsink.Migrate(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("applied migrations: %v", applied)

	sink, err := pgsink.New(pool, pgsink.Config{}) // application_logs, 10s write timeout
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()

	e := event.New(event.LevelError, event.KindApp, "payment failed")
	e.Attrs = map[string]any{"order_id": 42, "provider": "acme-pay"}
	batch := subscribers.NewBatch([]*event.Event{e})
	if err := sink.Write(ctx, batch); err != nil {
		log.Fatal(err)
	}
	// Writing the same batch again (a retry, a redelivery) stores nothing more.
	if err := sink.Write(ctx, batch); err != nil {
		log.Fatal(err)
	}
}

// Drop the day partitions that end more than 30 days ago (a dry run first), and the dead letters that
// failed before then. (It needs a running PostgreSQL, so it is compiled, not run.)
func ExampleSink_Prune() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sink, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		log.Fatal(err)
	}
	cutoff := time.Now().Add(-pgsink.DefaultRetention)
	for _, dryRun := range []bool{true, false} {
		rep, err := sink.Prune(ctx, cutoff, dryRun)
		if err != nil {
			log.Fatal(err)
		}
		for _, u := range rep.Removed {
			log.Printf("dry run %v: %s, %d rows, %d bytes", dryRun, u.Name, u.Events, u.Bytes)
		}
		log.Printf("oldest event kept: %s", rep.Oldest)
	}
}
