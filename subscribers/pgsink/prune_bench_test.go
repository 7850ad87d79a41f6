package pgsink_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// benchRows is how many rows a day holds in the retention benchmarks: SLUICE_BENCH_PRUNE_ROWS, default
// 100,000.
func benchRows(b *testing.B) int {
	if s := os.Getenv("SLUICE_BENCH_PRUNE_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("SLUICE_BENCH_PRUNE_ROWS=%q: want a positive number", s)
		}
		return n
	}
	return 100_000
}

// fillDay writes n realistic rows (sinktest.Events, ~1.1 KB) at the day that starts at d, through the
// sink, in batches of 5,000.
func fillDay(b *testing.B, s *pgsink.Sink, d time.Time, n int) {
	ctx := context.Background()
	for i := 0; i < n; i += 5000 {
		k := min(5000, n-i)
		events := sinktest.Events(k, d.Add(time.Hour+time.Duration(i)*time.Millisecond))
		if err := s.Write(ctx, subscribers.NewBatch(events)); err != nil {
			b.Fatal(err)
		}
	}
}

func tableBytes(b *testing.B, pool *pgxpool.Pool) int64 {
	var n int64
	err := pool.QueryRow(context.Background(), `SELECT pg_total_relation_size('application_logs'::regclass) +
		coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'application_logs'::regclass), 0)`).Scan(&n)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkRetention removes one day of rows (benchRows, ~1.1 KB each) from a table that also holds
// today's as many, side by side:
//
//   - drop-partition: Sink.Prune on the partitioned table (count the partition's rows, DETACH
//     PARTITION CONCURRENTLY, DROP TABLE), what retention does;
//   - delete: DELETE FROM application_logs WHERE ts < cutoff on the unpartitioned table of migrations
//     0001-0002, what retention would be without partitions.
//
// The table is vacuumed before (a day past the retention has been). Each reports the time of the
// removal and the table's size on disk (indexes included) before and after it, in MB: a DELETE leaves its dead rows in place until a VACUUM (and keeps the space even
// then), a dropped partition gives its files back.
func BenchmarkRetention(b *testing.B) {
	b.Run("drop-partition", func(b *testing.B) {
		benchRetention(b, func(ctx context.Context, pool *pgxpool.Pool) {
			if _, err := pgsink.Migrate(ctx, pool); err != nil {
				b.Fatal(err)
			}
		}, func(ctx context.Context, pool *pgxpool.Pool, s *pgsink.Sink, cutoff time.Time) {
			rep, err := s.Prune(ctx, cutoff, false)
			if err != nil || len(rep.Removed) != 1 {
				b.Fatalf("Prune removed %v: %v", rep.Removed, err)
			}
		})
	})
	b.Run("delete", func(b *testing.B) {
		benchRetention(b, func(ctx context.Context, pool *pgxpool.Pool) {
			if err := pgsink.ApplyUpTo(ctx, pool, 2); err != nil {
				b.Fatal(err)
			}
		}, func(ctx context.Context, pool *pgxpool.Pool, _ *pgsink.Sink, cutoff time.Time) {
			if _, err := pool.Exec(ctx, "DELETE FROM application_logs WHERE ts < $1", cutoff); err != nil {
				b.Fatal(err)
			}
		})
	})
}

func benchRetention(b *testing.B, schema func(context.Context, *pgxpool.Pool),
	remove func(context.Context, *pgxpool.Pool, *pgsink.Sink, time.Time)) {
	ctx := context.Background()
	n := benchRows(b)
	today := day(time.Now())
	old := today.AddDate(0, 0, -40)
	var before, after, took float64
	for b.Loop() {
		b.StopTimer()
		pool := newPool(b)
		schema(ctx, pool)
		s, err := pgsink.New(pool, pgsink.Config{WriteTimeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		fillDay(b, s, old, n)
		fillDay(b, s, today, n)
		// A day past the retention has long been vacuumed (autovacuum runs after inserts too): the
		// rows' hint bits are set and the visibility map is current, for both variants.
		for _, q := range []string{"VACUUM ANALYZE application_logs", "CHECKPOINT"} {
			if _, err := pool.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		before += float64(tableBytes(b, pool)) / 1e6
		start := time.Now()
		b.StartTimer()
		remove(ctx, pool, s, old.AddDate(0, 0, 1))
		b.StopTimer()
		took += time.Since(start).Seconds()
		after += float64(tableBytes(b, pool)) / 1e6
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "rows-removed")
	b.ReportMetric(before/float64(b.N), "MB-before")
	b.ReportMetric(after/float64(b.N), "MB-after")
	b.ReportMetric(took/float64(b.N)*1000, "ms/removal")
}

// BenchmarkConvertToPartitions runs migration 0003 on a table that migrations 0001-0002 made and that
// holds benchRows rows over 10 days, and reports how long the table was locked (the swap: ACCESS
// EXCLUSIVE) against how long the whole migration took (the index builds and the constraint's
// validation run while writes go on).
func BenchmarkConvertToPartitions(b *testing.B) {
	ctx := context.Background()
	n := benchRows(b)
	var prepare, locked float64
	for b.Loop() {
		b.StopTimer()
		pool := newPool(b)
		if err := pgsink.ApplyUpTo(ctx, pool, 2); err != nil {
			b.Fatal(err)
		}
		s, err := pgsink.New(pool, pgsink.Config{WriteTimeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		today := day(time.Now())
		for d := 0; d < 10; d++ {
			fillDay(b, s, today.AddDate(0, 0, -d), n/10)
		}
		b.StartTimer()
		p, l, err := pgsink.ConvertToPartitions(ctx, pool, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		prepare += p.Seconds() * 1000
		locked += l.Seconds() * 1000
	}
	b.ReportMetric(float64(n), "rows")
	b.ReportMetric(prepare/float64(b.N), "ms-prepare")
	b.ReportMetric(locked/float64(b.N), "ms-locked")
}
