package logquery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// benchEvents is how many events the benchmarks store: a day of them, in chunks spread over the day.
const (
	benchEvents = 1_000_000
	benchChunk  = 10_000
)

var benchDay = time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)

// benchData calls store with a day of realistic events (sinktest.Events, about 1.1 KB of JSON each),
// chunk by chunk, and returns the id of one request in the middle of the day, whose HTTP event has
// two application logs with it.
func benchData(b *testing.B, n int, store func([]*event.Event)) string {
	b.Helper()
	chunks := n / benchChunk
	var needle string
	for c := range chunks {
		events := sinktest.Events(benchChunk, benchDay.Add(time.Duration(c)*24*time.Hour/time.Duration(chunks)))
		if c == chunks/2 {
			h := events[benchChunk/2]
			for h.Kind != event.KindHTTP {
				h = events[benchChunk/2+1]
			}
			needle = h.RequestID
			for i, a := range []int{-7, 9} { // two application logs of the request, among the others
				app := sinktest.AppEvent(rand.New(rand.NewPCG(uint64(i), 1)), h.TS.Add(time.Duration(i+1)*time.Millisecond))
				app.RequestID = needle
				events[benchChunk/2+a] = app
			}
		}
		store(events)
	}
	return needle
}

// peakHeap samples the heap in use until stop is called, and returns the highest sample.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// sluice logs --request-id against 1,000,000 rows (written by the sink, 10,000 per COPY): one query,
// served by the request_id index. It reports the table's size and the plan.
func BenchmarkPostgresRequestID(b *testing.B) {
	ctx := context.Background()
	pool := testenv.MigratedPostgres(b)
	start := time.Now()
	sink, err := pgsink.New(pool, pgsink.Config{}) // it makes the day's partition
	if err != nil {
		b.Fatal(err)
	}
	needle := benchData(b, benchEvents, func(events []*event.Event) {
		if err := sink.Write(ctx, subscribers.NewBatch(events)); err != nil {
			b.Fatal(err)
		}
	})
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+pgsink.DefaultTable); err != nil {
		b.Fatal(err)
	}
	var size string
	_ = pool.QueryRow(ctx, "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree($1::regclass)", pgsink.DefaultTable).Scan(&size)
	b.Logf("%d rows COPY'd in %v; table and indexes %s", benchEvents, time.Since(start).Round(time.Second), size)
	src, err := logquery.NewPostgres(pool, logquery.PostgresConfig{})
	if err != nil {
		b.Fatal(err)
	}
	f := logquery.Filter{RequestID: needle, Limit: 1000}
	logPlan(b, pool, needle)
	for _, c := range []struct {
		name string
		f    logquery.Filter
	}{
		{"request-id", f},
		{"request-id/day", logquery.Filter{RequestID: needle, Since: benchDay, Until: benchDay.Add(24 * time.Hour), Limit: 1000}},
		{"level-error/newest-100", logquery.Filter{Levels: []event.Level{event.LevelError}, Limit: 100}},
		{"status-5xx/last-hour/newest-100", logquery.Filter{Status: []logquery.StatusRange{{Min: 500, Max: 599}}, Since: benchDay.Add(23 * time.Hour), Limit: 100}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var got int
			for b.Loop() {
				res, err := src.Query(ctx, c.f, func(*event.Event) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				got = res.Events
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
			b.ReportMetric(float64(got), "events")
		})
	}
}

// logPlan logs the plan of the request id query: an index scan.
func logPlan(b *testing.B, pool *pgxpool.Pool, needle string) {
	rows, err := pool.Query(context.Background(), "EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM "+pgsink.DefaultTable+
		" WHERE request_id = $1 ORDER BY ts DESC, id DESC LIMIT 1001", needle)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	plan := ""
	for rows.Next() {
		var l string
		_ = rows.Scan(&l)
		plan += "\n\t" + l
	}
	b.Logf("plan:%s", plan)
}

// sluice logs --archive --request-id over 1,000,000 archived events (a day, written by the archive
// sink to a local directory in batches of 1,000): the events scanned per second and the peak heap.
func BenchmarkArchiveRequestID(b *testing.B) {
	store, err := blobsink.NewDirStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	sink, err := blobsink.New(store, blobsink.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	needle := benchData(b, benchEvents, func(events []*event.Event) {
		for i := 0; i < len(events); i += 1000 {
			if err := sink.Write(ctx, subscribers.NewBatch(events[i:i+1000])); err != nil {
				b.Fatal(err)
			}
		}
	})
	names, _ := store.List(ctx, "")
	b.Logf("%d events archived in %d blobs in %v", benchEvents, len(names), time.Since(start).Round(time.Second))
	day := logquery.Filter{Since: benchDay, Until: benchDay.Add(24 * time.Hour)}
	for _, c := range []struct {
		name string
		f    func(logquery.Filter) logquery.Filter
	}{
		{"request-id", func(f logquery.Filter) logquery.Filter { f.RequestID = needle; return f }},
		// Every line decoded: what a filter that a line's bytes cannot rule out costs.
		{"status-5xx-level-error", func(f logquery.Filter) logquery.Filter {
			f.Status, f.Levels, f.Limit = []logquery.StatusRange{{Min: 500, Max: 599}}, []event.Level{event.LevelError}, 100
			return f
		}},
	} {
		for _, conc := range []int{1, logquery.DefaultConcurrency} {
			b.Run(fmt.Sprintf("%s/concurrency-%d", c.name, conc), func(b *testing.B) {
				a, err := logquery.NewArchive(store, logquery.ArchiveConfig{Concurrency: conc})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				stop := peakHeap()
				var res logquery.ArchiveResult
				for b.Loop() {
					if res, err = a.Scan(ctx, c.f(day), func(*event.Event) error { return nil }); err != nil {
						b.Fatal(err)
					}
				}
				peak := stop()
				b.ReportMetric(float64(res.Lines)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(before.HeapInuse)/(1<<20), "heap-before-MiB")
				b.ReportMetric(float64(res.Events), "events")
			})
		}
	}
}
