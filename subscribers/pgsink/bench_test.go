package pgsink_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// BenchmarkWrite compares, with the same ~1.1 KB rows (sinktest.Events: 3 HTTP events per app event)
// into the same migrated application_logs table (uuid key, three indexes), each on a fresh database:
//
//   - sink: Sink.Write (dedupe, cleaning, COPY to the stage, INSERT ... ON CONFLICT, one transaction);
//   - copyfrom: pool.CopyFrom of the same rows straight into the table, the ceiling (not idempotent);
//   - insert-per-row: one autocommitted INSERT per event, what the design replaces.
//
// Each reports events/s; building the rows is timed in all three, generating the events in none.
func BenchmarkWrite(b *testing.B) {
	b.Run("sink/batch=100", func(b *testing.B) { benchWrite(b, 100, writeSink) })
	b.Run("sink/batch=1000", func(b *testing.B) { benchWrite(b, 1000, writeSink) })
	b.Run("sink/batch=5000", func(b *testing.B) { benchWrite(b, 5000, writeSink) })
	b.Run("copyfrom/batch=1000", func(b *testing.B) { benchWrite(b, 1000, writeCopyFrom) })
	b.Run("insert-per-row", func(b *testing.B) { benchWrite(b, 1000, writePerRow) })
}

type writeFunc func(ctx context.Context, pool *pgxpool.Pool, s *pgsink.Sink, events []*event.Event) error

func benchWrite(b *testing.B, size int, write writeFunc) {
	ctx := context.Background()
	pool := migratedPool(b)
	s, err := pgsink.New(pool, pgsink.Config{WriteTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		events := sinktest.Events(size, start.Add(time.Duration(i)*time.Hour))
		b.StartTimer()
		if err := write(ctx, pool, s, events); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
}

func writeSink(ctx context.Context, _ *pgxpool.Pool, s *pgsink.Sink, events []*event.Event) error {
	return s.Write(ctx, subscribers.NewBatch(events))
}

func writeCopyFrom(ctx context.Context, pool *pgxpool.Pool, _ *pgsink.Sink, events []*event.Event) error {
	rows, _ := pgsink.EventRows(events)
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, pgsink.ColumnNames, pgx.CopyFromRows(rows))
	return err
}

var insertRow = func() string {
	params := make([]string, len(pgsink.ColumnNames))
	for i := range params {
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	return "INSERT INTO application_logs (" + strings.Join(pgsink.ColumnNames, ", ") + ") VALUES (" +
		strings.Join(params, ", ") + ")"
}()

func writePerRow(ctx context.Context, pool *pgxpool.Pool, _ *pgsink.Sink, events []*event.Event) error {
	rows, _ := pgsink.EventRows(events)
	for _, r := range rows {
		if _, err := pool.Exec(ctx, insertRow, r...); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkEventRows is the CPU work of turning events into the bytes of the sink's binary COPY,
// without a database: validating, cleaning, encoding the request, response and attributes as jsonb
// documents, and the tuples. "decoded" are the
// same events as a worker has them (event.DecodeLean of a chunk: lean, the nested parts found where
// the decoder noted them), and "decoded-scan" those events with Raw copied, so that each nested part
// is found by scanning Raw (event.RawMember), as before the decoder noted them.
func BenchmarkEventRows(b *testing.B) {
	events := sinktest.Events(1000, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	var chunk []byte
	for _, e := range events {
		line, err := e.AppendJSON(nil)
		if err != nil {
			b.Fatal(err)
		}
		chunk = append(append(chunk, line...), '\n')
	}
	decoded, bad := event.DecodeLean(chunk)
	if len(bad) > 0 || len(decoded) != len(events) {
		b.Fatalf("DecodeLean: %d events, bad %v", len(decoded), bad)
	}
	scanned, _ := event.DecodeLean(chunk)
	for _, e := range scanned {
		e.Raw = append([]byte(nil), e.Raw...)
	}
	for _, c := range []struct {
		name   string
		events []*event.Event
	}{{"full", events}, {"decoded", decoded}, {"decoded-scan", scanned}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if bad := pgsink.EncodedRows(c.events); len(bad) > 0 {
					b.Fatal(bad[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(c.events)), "ns/event")
		})
	}
}

// BenchmarkEncodeRow is pgx's binary encoding of the rows that COPY sends (the client's CPU per event
// in pgx's CopyFrom, which the sink no longer uses: it encodes its typed rows itself, see
// BenchmarkEventRows), next to the same rows with the id as a uuid.UUID, which pgx encodes through
// its driver.Valuer text form (about 2 µs and 20 allocations per id on the reference machine; Row
// passes a pgtype.UUID, 16 bytes).
func BenchmarkEncodeRow(b *testing.B) {
	oids := []uint32{pgtype.UUIDOID, pgtype.TimestamptzOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID,
		pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID,
		pgtype.TextOID, pgtype.Int4OID, pgtype.Float8OID, pgtype.TextOID, pgtype.TextOID, pgtype.Int8OID,
		pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID, pgtype.JSONBOID, pgtype.JSONBOID, pgtype.JSONBOID}
	events := sinktest.Events(1000, time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC))
	rows, err := pgsink.Rows(events)
	if err != nil {
		b.Fatal(err)
	}
	if len(rows[0]) != len(oids) {
		b.Fatalf("a row has %d values, the benchmark knows %d columns", len(rows[0]), len(oids))
	}
	encode := func(b *testing.B, rows [][]any) {
		m := pgtype.NewMap()
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			for _, r := range rows {
				for j, v := range r {
					var err error
					if buf, err = m.Encode(oids[j], pgtype.BinaryFormatCode, v, buf[:0]); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/event")
	}
	b.Run("row", func(b *testing.B) { encode(b, rows) })
	b.Run("uuid.UUID-id", func(b *testing.B) {
		withUUID := make([][]any, len(rows))
		for i, r := range rows {
			withUUID[i] = append([]any{events[i].ID}, r[1:]...)
		}
		encode(b, withUUID)
	})
}
