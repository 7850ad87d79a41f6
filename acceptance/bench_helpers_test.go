package acceptance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// benchStart is the time of the first generated event: fixed, so that every benchmark writes the same
// content (sinktest.Events depends only on the count and this time; only the ids differ).
var benchStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// benchEvents generates the b.N events of a benchmark, before its timer starts.
func benchEvents(b *testing.B) []*event.Event { return sinktest.Events(b.N, benchStart) }

// benchPipeline starts a pipeline from cfg, publishes events as fast as it takes them (on a
// "queue_full" drop the producer sleeps briefly and offers the same event again, so that every event
// is accepted), and closes it, which writes everything accepted. The timer runs from the first Publish
// to Close returning; b.N is the event count, so ns/op is per event.
func benchPipeline(b *testing.B, cfg sluice.Config, events []*event.Event) {
	b.Helper()
	ctx := context.Background()
	p, err := sluice.New(ctx, cfg, sluice.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(ctx) // no-op after the Close below; closes the pipeline when the benchmark fails
	runtime.GC()
	usage := benchStartUsage()
	b.ResetTimer()
	fullWaits := 0
	for i, e := range events {
		for {
			err := p.Publish(ctx, e)
			if err == nil {
				break
			}
			var drop *sluice.DropError
			if !errors.As(err, &drop) || drop.Reason() != bus.ReasonQueueFull {
				b.Fatalf("publish event %d: %v", i, err)
			}
			fullWaits++
			time.Sleep(200 * time.Microsecond)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	closeStart := time.Now()
	err = p.Close(cctx)
	b.StopTimer()
	closing := time.Since(closeStart)
	if err != nil {
		b.Fatalf("close: %v", err)
	}
	benchReport(b, usage)
	b.ReportMetric(float64(fullWaits)/float64(b.N), "full-waits/event")
	m := benchScrape(b, p)
	if n := m["sluice_sink_batch_events_count"]; n > 0 {
		b.ReportMetric(n, "batches")
		b.ReportMetric(m["sluice_sink_batch_events_sum"]/n, "events/batch")
	}
	// Close writes what the bus still holds (up to bus.max_events when the producer kept it full).
	b.ReportMetric(float64(closing.Milliseconds()), "close-ms")
	// The average number of batch writes under way (row building and the sink's round trips): near the
	// route's max_concurrent_writes means the sink is the bottleneck, well below it means what feeds it.
	b.ReportMetric(m["sluice_sink_write_seconds_sum"]/b.Elapsed().Seconds(), "writes-busy")
}

// benchScrape reads the pipeline's Prometheus metrics, summed over labels, by sample name.
func benchScrape(b *testing.B, p *sluice.Pipeline) map[string]float64 {
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	m := map[string]float64{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			b.Fatalf("metrics: %q: %v", line, err)
		}
		name, _, _ := strings.Cut(line[:sp], "{")
		m[name] += v
	}
	return m
}

// benchReport reports the events/s of the timed part, and the CPU used meanwhile.
func benchReport(b *testing.B, usage benchUsage) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	usage.report(b)
}

// benchPool connects to dsn; the pool is closed when the benchmark ends.
func benchPool(b *testing.B, dsn string) *pgxpool.Pool {
	b.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// benchMigratedPool returns a pool on a fresh database holding the application_logs schema.
func benchMigratedPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	pool := benchPool(b, testenv.Postgres(b))
	if _, err := pgsink.Migrate(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
	return pool
}

// benchExpectRows fails the benchmark unless application_logs holds exactly want rows.
func benchExpectRows(b *testing.B, pool *pgxpool.Pool, want int) {
	b.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM application_logs").Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n != want {
		b.Fatalf("application_logs holds %d rows, want %d", n, want)
	}
}

// benchExpectBlobs fails the benchmark unless the container's blobs hold each of the events exactly once.
func benchExpectBlobs(b *testing.B, connectionString, container string, events []*event.Event) {
	b.Helper()
	ctx := context.Background()
	store, err := blobsink.OpenAzure(ctx, blobsink.AzureConfig{ConnectionString: connectionString, Container: container})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	names, err := store.List(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	want := make(map[uuid.UUID]bool, len(events))
	for _, e := range events {
		want[e.ID] = true
	}
	lines := 0
	for _, name := range names {
		if blobsink.IsDeadLetter(name) {
			b.Fatalf("dead-letter blob %s: some events were refused", name)
		}
		data, err := store.Get(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		stored, err := blobsink.Decode(data)
		if err != nil {
			b.Fatalf("blob %s: %v", name, err)
		}
		for _, e := range stored {
			if !want[e.ID] {
				b.Fatalf("blob %s: event %s is not one published, or is stored twice", name, e.ID)
			}
			want[e.ID] = false
		}
		lines += len(stored)
	}
	if lines != len(events) {
		b.Fatalf("%d blobs hold %d event lines, want %d", len(names), lines, len(events))
	}
}

// benchColumns are the application_logs columns that pgsink fills, in the order of benchRow's values.
var benchColumns = []string{"id", "ts", "level", "kind", "message", "service", "request_id", "trace_id",
	"span_id", "method", "route", "path", "status", "duration_ms", "client_ip", "user_agent", "bytes_in",
	"bytes_out", "error", "source", "request", "response", "attrs"}

// benchInsert is one single-row INSERT of benchColumns.
var benchInsert = func() string {
	params := make([]string, len(benchColumns))
	for i := range params {
		params[i] = "$" + strconv.Itoa(i+1)
	}
	return "INSERT INTO application_logs (" + strings.Join(benchColumns, ", ") + ") VALUES (" +
		strings.Join(params, ", ") + ")"
}()

// benchRow is an event's row as pgsink builds it (NULL for an empty optional field, the nested parts
// as jsonb marshalled with encoding/json), without pgsink's cleaning: the generated text is clean.
func benchRow(e *event.Event) ([]any, error) {
	req, err1 := benchDoc(e.Request, e.Request == nil)
	resp, err2 := benchDoc(e.Response, e.Response == nil)
	attrs, err3 := benchDoc(e.Attrs, len(e.Attrs) == 0)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return []any{
		e.ID, e.TS, string(e.Level), string(e.Kind), e.Message,
		benchText(e.Service), benchText(e.RequestID), benchText(e.TraceID), benchText(e.SpanID),
		benchText(e.Method), benchText(e.Route), benchText(e.Path),
		benchNumber(int32(e.Status)), benchNumber(e.DurationMS),
		benchText(e.ClientIP), benchText(e.UserAgent), benchNumber(e.BytesIn), benchNumber(e.BytesOut),
		benchText(e.Error), benchText(e.Source),
		req, resp, attrs,
	}, nil
}

// benchDoc is a jsonb value: v marshalled, or NULL when none.
func benchDoc(v any, none bool) (any, error) {
	if none {
		return nil, nil
	}
	return json.Marshal(v)
}

func benchText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func benchNumber[N int32 | int64 | float64](n N) any {
	if n == 0 {
		return nil
	}
	return n
}

// benchUsage is a snapshot of the CPU time used by this process and by the whole machine, read from
// /proc (Linux); elsewhere it reports nothing.
type benchUsage struct {
	ok                      bool
	self, busy, total, ncpu float64 // clock ticks; ncpu counted in /proc/stat
}

func benchStartUsage() benchUsage {
	var u benchUsage
	stat, err1 := os.ReadFile("/proc/stat")
	self, err2 := os.ReadFile(filepath.Join("/proc", "self", "stat"))
	if err1 != nil || err2 != nil {
		return u
	}
	for _, line := range strings.Split(string(stat), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 5 && f[0] == "cpu":
			for i, v := range f[1:] {
				n, _ := strconv.ParseFloat(v, 64)
				u.total += n
				if i != 3 && i != 4 { // idle, iowait
					u.busy += n
				}
			}
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu"):
			u.ncpu++
		}
	}
	// /proc/self/stat: pid (comm) state ... utime stime are fields 14 and 15; comm may hold spaces.
	rest := strings.Fields(string(self[strings.LastIndexByte(string(self), ')')+1:]))
	if len(rest) < 13 || u.ncpu == 0 {
		return u
	}
	utime, _ := strconv.ParseFloat(rest[11], 64)
	stime, _ := strconv.ParseFloat(rest[12], 64)
	u.self = utime + stime
	u.ok = true
	return u
}

// report adds the CPU used since u, in cores (1 = one core busy for the whole time): by this process
// (the pipeline and the producer, not PostgreSQL nor Azurite) and by the whole machine (everything,
// other engineers' work included).
func (u benchUsage) report(b *testing.B) {
	now := benchStartUsage()
	if !u.ok || !now.ok || now.total <= u.total {
		return
	}
	perCore := (now.total - u.total) / now.ncpu // ticks of one core over the interval
	b.ReportMetric((now.self-u.self)/perCore, "go-cores")
	b.ReportMetric((now.busy-u.busy)/perCore, "host-cores")
}
