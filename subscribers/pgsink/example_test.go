package pgsink_test

import (
	"context"
	"log"

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
