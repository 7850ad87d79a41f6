package pgsink_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// The sink's own binary COPY stores what pgx's CopyFrom stores for the same rows, value for value:
// typical events, and the edges of every type (times before 2000 and with nanoseconds, negative and
// huge numbers, a NaN-free float's extremes, text with every kind of character, empty optional
// fields, documents and none).
func TestCopyBinaryMatchesPgx(t *testing.T) {
	ctx := context.Background()
	pool := migratedPool(t)
	for _, table := range []string{"by_pgx", "by_sink"} {
		if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (LIKE application_logs INCLUDING DEFAULTS)"); err != nil {
			t.Fatal(err)
		}
	}
	events := sinktest.Events(500, time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC))
	edge := func(ts time.Time) *event.Event {
		e := event.New(event.LevelError, event.KindHTTP, "ünïcödé ✓ \"quoted\" \\ back\tslash\n𝄞")
		e.ID, e.TS = uuid.Must(uuid.NewV7()), ts
		return e
	}
	for _, ts := range []time.Time{
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC),
		time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(2026, 6, 1, 12, 0, 0, 0, time.FixedZone("x", -7*3600-1800)),
	} {
		events = append(events, edge(ts))
	}
	e := edge(time.Now())
	e.Status, e.DurationMS, e.BytesIn, e.BytesOut = -1, -math.MaxFloat64, math.MinInt64, math.MaxInt64
	e.Service, e.RequestID, e.Path, e.Error, e.Source = "s", "r", "/p?q=1", "boom", "main.go:1"
	e.Attrs = map[string]any{"n": 1.5e-300, "s": "x", "nested": map[string]any{"a": []any{1, "b", nil}}}
	events = append(events, e)
	e = edge(time.Now())
	e.Status, e.DurationMS = math.MaxInt32, math.SmallestNonzeroFloat64
	events = append(events, e)

	rows, bad := pgsink.EventRows(events)
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"by_pgx"}, pgsink.ColumnNames, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	if err := pgsink.CopyRows(ctx, pool, "by_sink", events); err != nil {
		t.Fatal(err)
	}
	var n, differ int
	cols := strings.Join(pgsink.ColumnNames, ", ") // not inserted_at: each COPY's now()
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM by_sink),
		(SELECT count(*) FROM (SELECT `+cols+` FROM by_pgx EXCEPT ALL SELECT `+cols+` FROM by_sink) d) +
		(SELECT count(*) FROM (SELECT `+cols+` FROM by_sink EXCEPT ALL SELECT `+cols+` FROM by_pgx) d)`).Scan(&n, &differ); err != nil {
		t.Fatal(err)
	}
	if n != len(events) || differ != 0 {
		t.Fatalf("the sink's COPY stored %d rows of %d, %d rows differ from pgx's", n, len(events), differ)
	}
}

// A table made by hand whose column has another type than the one the sink's COPY writes (here
// status smallint) is named in the write's error, which is not permanent (the events are not dead
// letters: the table is wrong), and nothing is written.
func TestWriteNamesAColumnOfAnotherType(t *testing.T) {
	ctx := context.Background()
	pool := migratedPool(t)
	if _, err := pool.Exec(ctx, "CREATE TABLE custom_logs (LIKE application_logs INCLUDING ALL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ALTER TABLE custom_logs ALTER status TYPE smallint, ALTER request TYPE text"); err != nil {
		t.Fatal(err)
	}
	s, err := pgsink.New(pool, pgsink.Config{Table: "custom_logs", WriteTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Write(ctx, subscribers.NewBatch(sinktest.Events(10, time.Now())))
	if err == nil || !strings.Contains(err.Error(), "column status") || !strings.Contains(err.Error(), "smallint") ||
		!strings.Contains(err.Error(), "column request") || subscribers.IsPermanent(err) {
		t.Fatalf("Write = %v, want a transient error naming status (smallint) and request", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM custom_logs").Scan(&n); err != nil || n != 0 {
		t.Fatalf("custom_logs holds %d rows (%v), want 0", n, err)
	}
}
