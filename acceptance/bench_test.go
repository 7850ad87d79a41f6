package acceptance_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/internal/testenv"
)

// The throughput benchmarks: the events/s that the pipeline sustains into PostgreSQL and into Azurite
// on this machine, next to a raw pgx CopyFrom of the same rows (the ceiling) and one autocommitted
// INSERT per event (the design sluice replaces). b.N is the number of events, so ns/op is per event:
//
//	go test -run '^$' -bench 'Pipeline|RawCopyFrom' -benchtime 50000x ./acceptance/
//	go test -run '^$' -bench PerEventInsert -benchtime 3000x ./acceptance/
//
// Every benchmark uses sinktest.Events (~1.1 KB realistic events, three HTTP events per app event),
// generated before the timer starts, writes into a fresh database or container, and checks afterwards
// that exactly b.N events were stored. Besides events/s each reports go-cores and host-cores: the CPU
// this process and the whole machine used while timed (2 = both cores of the reference machine busy).
// The pipeline benchmarks add, from the pipeline's own metrics and the producer: batches and
// events/batch written, writes-busy (batch writes under way on average; the route allows 2 to
// PostgreSQL, 4 to blob), close-ms (Close writing what the bus still held) and full-waits/event (how
// often the producer found the bus full and waited).

// benchBatch is the batch policy of the pipeline benchmarks' route: write at 1,000 events or 200 ms.
var benchBatch = config.BatchPolicy{MaxEvents: 1000, MaxWait: 200 * time.Millisecond}

// benchConfig is the pipeline's default configuration with one route, taking every event, to sink.
func benchConfig(b *testing.B, sink string) sluice.Config {
	cfg := sluice.DefaultConfig()
	cfg.Blob.Dir = b.TempDir()
	cfg.Routes = []sluice.Route{{Name: sink, Sink: sink, Batch: benchBatch}}
	return cfg
}

// BenchmarkPipelinePostgres publishes b.N events into a Pipeline whose only route writes every event
// to PostgreSQL, and closes it: Publish (encode, bounded bus), router, batcher (decode, batch), pgsink
// (COPY to a stage, INSERT ... ON CONFLICT).
func BenchmarkPipelinePostgres(b *testing.B) {
	cfg := benchConfig(b, config.SinkPostgres)
	cfg.Postgres.DSN = testenv.Postgres(b)
	events := benchEvents(b)
	benchPipeline(b, cfg, events)
	benchExpectRows(b, benchPool(b, cfg.Postgres.DSN), b.N)
}

// BenchmarkPipelineAzurite publishes b.N events into a Pipeline whose only route writes every event to
// the blob archive in Azurite (gzip NDJSON, one blob per batch and hour), and closes it.
func BenchmarkPipelineAzurite(b *testing.B) {
	cfg := benchConfig(b, config.SinkBlob)
	cfg.Postgres.Enabled = false
	cfg.Blob.ConnectionString = testenv.Azurite(b)
	cfg.Blob.Container = testenv.Container(b)
	events := benchEvents(b)
	benchPipeline(b, cfg, events)
	benchExpectBlobs(b, cfg.Blob.ConnectionString, cfg.Blob.Container, events)
}

// BenchmarkRawCopyFrom is the ceiling: the same events turned into the same rows (timed) and written
// with pool.CopyFrom straight into application_logs, 1,000 rows per COPY, one writer. It is not
// idempotent (a duplicate id fails the batch), which the pipeline's sink is.
func BenchmarkRawCopyFrom(b *testing.B) {
	ctx := context.Background()
	pool := benchMigratedPool(b)
	events := benchEvents(b)
	usage := benchStartUsage()
	b.ResetTimer()
	for start := 0; start < len(events); start += 1000 {
		batch := events[start:min(start+1000, len(events))]
		rows := make([][]any, len(batch))
		for i, e := range batch {
			row, err := benchRow(e)
			if err != nil {
				b.Fatal(err)
			}
			rows[i] = row
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, benchColumns, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReport(b, usage)
	benchExpectRows(b, pool, b.N)
}

// BenchmarkPerEventInsert is the design sluice replaces: one autocommitted single-row INSERT per event,
// the same rows, one writer. It is slow: run it with a small -benchtime such as 3000x.
func BenchmarkPerEventInsert(b *testing.B) {
	ctx := context.Background()
	pool := benchMigratedPool(b)
	events := benchEvents(b)
	usage := benchStartUsage()
	b.ResetTimer()
	for _, e := range events {
		row, err := benchRow(e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, benchInsert, row...); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReport(b, usage)
	benchExpectRows(b, pool, b.N)
}
