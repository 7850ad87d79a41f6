package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/internal/testenv"
)

// TestQuickRunsEveryScenario runs the whole harness in quick mode against the real PostgreSQL, Azurite
// and a freshly built sluice binary, and checks only that every scenario ran and produced numbers,
// that the JSON has its stable keys and that the plot is a PNG. It asserts no timing.
func TestQuickRunsEveryScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario: not with -short")
	}
	azurite := testenv.Azurite(t)
	admin := adminDSN()
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sluicelog/sluice/cmd/sluice").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Run(ctx, Config{
		Quick: true, PostgresDSN: admin, Azurite: azurite, ServerBinary: bin,
		OverloadDuration: 2 * time.Second, Progress: testWriter{t},
		BusDrivers: []string{BusMemory}, // the brokers: TestQuickBusScenario
	})
	if err != nil {
		t.Fatal(err)
	}

	positive := map[string]float64{}
	for name, pg := range map[string]PGThroughput{"sluice": r.Postgres.Sluice, "raw_copyfrom": r.Postgres.RawCopyFrom,
		"per_event_insert": r.Postgres.PerEventInsert, "per_event_insert_one_conn": r.Postgres.PerEventInsertOneConn,
		"watermill_sql": r.Postgres.WatermillSQL} {
		positive["postgres."+name+".events_per_second"] = pg.EventsPerSecond
		positive["postgres."+name+".db_writes_per_second"] = pg.DBWritesPerSecond
		positive["postgres."+name+".stored_bytes_per_event"] = pg.StoredBytesPerEvent
	}
	for name, b := range map[string]BlobThroughput{"sluice": r.Blob.Sluice, "per_event_blob": r.Blob.PerEventBlob, "one_upload": r.Blob.OneUpload} {
		positive["blob."+name+".events_per_second"] = b.EventsPerSecond
		positive["blob."+name+".blobs_per_1000_events"] = b.BlobsPer1000Events
	}
	var keys []string
	for _, m := range r.HTTP.modes() {
		keys = append(keys, m.key)
		positive["http."+m.name+".max_sustained_rps"] = float64(m.mode.MaxSustainedRPS)
		positive["http."+m.name+".cpu_seconds"] = m.mode.CPUSeconds
		positive["http."+m.name+".peak_rss_bytes"] = float64(m.mode.PeakRSSBytes)
		positive["http."+m.name+".steps"] = float64(len(m.mode.Steps))
		for _, s := range m.mode.Steps {
			positive["http."+m.name+".steps.requests"] = float64(s.Requests)
			positive["http."+m.name+".steps.latency.p99_ms"] = s.Latency.P99
		}
	}
	o := r.Overload
	positive["overload.baseline.requests"] = float64(o.Baseline.Requests)
	positive["overload.overload.requests"] = float64(o.Overload.Requests)
	positive["overload.overload.latency.p99_ms"] = o.Overload.Latency.P99
	positive["overload.peak_rss_bytes"] = float64(o.PeakRSSBytes)
	positive["overload.max_goroutines"] = float64(o.MaxGoroutines)
	if o.MaxGoroutinesBesidesConnections == nil {
		t.Error("overload.max_goroutines_besides_connections is null")
	} else {
		positive["overload.max_goroutines_besides_connections"] = float64(*o.MaxGoroutinesBesidesConnections)
	}
	for _, s := range o.Samples {
		positive["overload.samples.http_connections"] = max(positive["overload.samples.http_connections"], float64(s.HTTPConnections))
	}
	positive["overload.events_published"] = o.EventsPublished
	positive["bus.in_process.events_per_second"] = r.Bus.InProcess.EventsPerSecond
	positive["bus.in_process.sink_write_seconds"] = r.Bus.InProcess.SinkWriteSeconds
	positive["overload.samples"] = float64(len(o.Samples))
	for _, q := range r.Ratios {
		positive["ratios."+q.Key] = q.Value
	}
	for name, v := range positive {
		if !(v > 0) {
			t.Errorf("%s = %v, want a positive number", name, v)
		}
	}
	if want := []string{"off", "echo", "echo_file", "sluice"}; !slices.Equal(keys, want) {
		t.Errorf("the HTTP modes are %v, want %v", keys, want)
	}
	if len(r.Ratios) != 11 {
		t.Errorf("%d ratios, want 11", len(r.Ratios))
	}

	jsonPath, doc := writeJSON(t, r)
	dir := filepath.Dir(jsonPath)
	for _, key := range stableKeys {
		if _, ok := lookup(doc, key); !ok {
			t.Errorf("the JSON has no %s", key)
		}
	}
	for _, m := range r.HTTP.modes() { // every mode, under the key the table and the plot know it by
		for _, field := range []string{"steps.latency.p99_ms", "max_sustained_rps", "cpu_seconds", "peak_rss_bytes"} {
			if _, ok := lookup(doc, "http."+m.key+"."+field); !ok {
				t.Errorf("the JSON has no http.%s.%s (%s)", m.key, field, m.name)
			}
		}
	}
	if _, err := ReadJSON(jsonPath); err != nil {
		t.Error(err)
	}

	var table bytes.Buffer
	r.WriteTable(&table)
	for _, want := range []string{"PostgreSQL sink", "Blob sink", "HTTP end to end", "Overload", "Ratios", "Bus: events/s",
		"Bus: where sluice's time went",
		"| Echo request logger to a file |", "CPU/request vs off", "most goroutines besides HTTP connections",
		"Overload: sluice's goroutines besides HTTP connections"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table has no %q section", want)
		}
	}

	pngPath := filepath.Join(dir, "bench.png")
	if err := r.WritePlot(pngPath); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("the plot is %v", b)
	}
}

// adminDSN is the PostgreSQL the tests make their databases on.
func adminDSN() string {
	if dsn := os.Getenv("SLUICE_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return testenv.DefaultPostgresDSN
}

// writeJSON writes r into a file of the test's and returns the file and its JSON read back, generic.
func writeJSON(t *testing.T, r *Results) (path string, doc map[string]any) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "bench.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return path, doc
}

// stableKeys are JSON keys that tools reading the results rely on (dots separate levels; a list is
// looked into at its first element).
var stableKeys = []string{
	"schema", "started_at", "seconds", "quick", "machine.cpus", "machine.cpu_model", "machine.postgres_version",
	"postgres.event_json_bytes",
	"postgres.sluice.events_per_second", "postgres.sluice.db_writes_per_second", "postgres.sluice.stored_bytes_per_event",
	"postgres.raw_copyfrom.events_per_second", "postgres.per_event_insert.events_per_second",
	"postgres.per_event_insert_one_conn.events_per_second",
	"postgres.watermill_sql.events_per_second",
	"blob.sluice.events_per_second", "blob.sluice.blobs_per_1000_events", "blob.per_event_blob.events_per_second",
	"blob.one_upload.events_per_second",
	"http.targets", "http.sustained_rule",
	"http.off.steps.rate", "http.off.steps.latency.p50_ms", "http.off.steps.latency.p99_ms", "http.off.steps.latency.p99_9_ms",
	"http.off.steps.latency.quantiles.q", "http.off.steps.server_cpu_seconds", "http.off.max_sustained_rps",
	"http.echo.max_sustained_rps", "http.sluice.max_sustained_rps", "http.sluice.cpu_seconds", "http.sluice.peak_rss_bytes",
	"http.echo_file.max_sustained_rps", "http.echo_file.cpu_seconds", "http.echo_file.peak_rss_bytes",
	"overload.rate", "overload.baseline.latency.p99_ms", "overload.overload.latency.p99_ms", "overload.peak_rss_bytes",
	"overload.max_goroutines", "overload.max_goroutines_besides_connections", "overload.events_dropped",
	"overload.samples.rss_bytes", "overload.samples.heap_inuse_bytes", "overload.samples.stack_inuse_bytes",
	"overload.samples.goroutines", "overload.samples.http_connections",
	"ratios.key", "ratios.value", "ratios.goal", "ratios.met",
	"bus.event_json_bytes", "bus.workers", "bus.publishers", "bus.in_process.events_per_second", "bus.in_process.stored_events",
	"bus.in_process.sink_write_seconds", "bus.in_process.publish_wait_seconds", "bus.brokers",
}

// busBrokerKeys are the stable JSON keys of each broker under bus.brokers.<driver>.
var busBrokerKeys = []string{
	"sluice.events_per_second", "sluice.seconds", "sluice.stored_events", "sluice.broker_messages", "sluice.db_writes",
	"sluice.client_cpu_seconds", "sluice.postgres_cpu_seconds", "sluice.broker_cpu_seconds",
	"sluice.publish_wait_seconds", "sluice.forward_seconds", "sluice.sink_write_seconds",
	"stock.events_per_second", "stock.stored_events", "stock.broker_messages",
}

// TestQuickBusScenario runs the bus scenario with quick sizes through the in-process bus and the Redis
// and NATS brokers of this machine (.ci/run starts them; SLUICE_TEST_REDIS_URL and SLUICE_TEST_NATS_URL
// point elsewhere), and checks that every design stored every event exactly once, that sluice sent
// fewer broker messages than events and the stock design one per event, and that the figures, ratios,
// JSON keys and tables are there. It asserts no timing.
func TestQuickBusScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a web node and workers through real brokers: not with -short")
	}
	// Every registered driver: each broker's stock design is Watermill's own adapter for it, and
	// this is where each adapter is seen to deliver every event.
	drivers := append([]string{BusMemory}, brokers.Names()...)
	for _, name := range []string{"nats", "redis"} {
		if !slices.Contains(drivers, name) {
			t.Fatalf("the %s broker driver is not registered (registered: %v)", name, brokers.Names())
		}
	}
	admin := adminDSN()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Run(ctx, Config{Quick: true, Scenarios: []string{ScenarioBus}, PostgresDSN: admin, BusDrivers: drivers,
		BusRuns: 2, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	b := r.Bus
	check := func(name string, d BusThroughput, messages func(int) bool) {
		t.Helper()
		if d.Events == 0 || d.StoredEvents != d.Events {
			t.Errorf("%s: %d events stored of %d", name, d.StoredEvents, d.Events)
		}
		if !(d.EventsPerSecond > 0) || !(d.ClientCPUSeconds > 0) || d.DBWrites == 0 {
			t.Errorf("%s: %v events/s, %v s of CPU, %d DB writes", name, d.EventsPerSecond, d.ClientCPUSeconds, d.DBWrites)
		}
		if !messages(d.BrokerMessages) {
			t.Errorf("%s: %d broker messages for %d events", name, d.BrokerMessages, d.Events)
		}
	}
	check("in-process", *b.InProcess, func(m int) bool { return m == 0 })
	if b.Runs != 2 || len(b.InProcessRuns) != 2 {
		t.Errorf("%d runs, %d of the in-process bus, want 2", b.Runs, len(b.InProcessRuns))
	}
	for _, name := range drivers[1:] {
		br := b.Brokers[name]
		if br == nil {
			t.Fatalf("no figures for %s", name)
		}
		if len(br.Runs) != 2 || (br.BusPair != br.Runs[0] && br.BusPair != br.Runs[1]) {
			t.Errorf("%s: %d runs, and the figures are none of them", name, len(br.Runs))
		} else if lower := min(br.Runs[0].Ratio(), br.Runs[1].Ratio()); br.Ratio() != lower {
			t.Errorf("%s: the figures' ratio is %v, want the lower middle run's, %v", name, br.Ratio(), lower)
		}
		check(name+" sluice", br.Sluice, func(m int) bool { return m > 0 && m < br.Sluice.Events })
		check(name+" stock", br.Stock, func(m int) bool { return m == br.Stock.Events })
		if !(br.Sluice.ForwardSeconds > 0) || !(br.Sluice.SinkWriteSeconds > 0) {
			t.Errorf("%s: forward %v s, sink writes %v s", name, br.Sluice.ForwardSeconds, br.Sluice.SinkWriteSeconds)
		}
	}
	keys := map[string]bool{}
	for _, q := range r.Ratios {
		keys[q.Key] = q.Value > 0
	}
	want := []string{RatioBusBrokerOverInProcess}
	for _, name := range drivers[1:] {
		want = append(want, RatioBusOverStockPrefix+name)
	}
	for _, k := range want {
		if !keys[k] {
			t.Errorf("no positive ratio %s in %v", k, r.Ratios)
		}
	}

	_, doc := writeJSON(t, r)
	for _, name := range drivers[1:] {
		for _, key := range busBrokerKeys {
			if _, ok := lookup(doc, "bus.brokers."+name+"."+key); !ok {
				t.Errorf("the JSON has no bus.brokers.%s.%s", name, key)
			}
		}
	}
	var table bytes.Buffer
	r.WriteTable(&table)
	for _, name := range drivers[1:] {
		if want := "| " + name + " | stock Watermill"; !strings.Contains(table.String(), want) {
			t.Errorf("the table has no %q row:\n%s", want, table.String())
		}
	}
	if err := r.WritePlot(filepath.Join(t.TempDir(), "bus.png")); err != nil {
		t.Error(err)
	}
}

// lookup follows a dotted key through objects, and into the first element of lists.
func lookup(v any, key string) (any, bool) {
	for _, k := range strings.Split(key, ".") {
		if list, ok := v.([]any); ok {
			if len(list) == 0 {
				return nil, false
			}
			v = list[0]
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// testWriter logs the harness's progress lines.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestSearchMax(t *testing.T) {
	capacity := 7300 // the rate above which a step is not sustained
	try := func(rate int) (LoadStep, error) { return LoadStep{Rate: rate, Sustained: rate <= capacity}, nil }
	for _, tc := range []struct {
		name  string
		fixed []LoadStep
		max   int
		want  int
		tried []int
	}{
		{"up from the highest fixed rate", []LoadStep{{Rate: 1000, Sustained: true}, {Rate: 5000, Sustained: true}}, 6, 6900,
			[]int{7500, 6300, 6900}}, // within 10%: done
		{"between the fixed rates", []LoadStep{{Rate: 5000, Sustained: true}, {Rate: 10000}}, 6, 6900, []int{7500, 6300, 6900}},
		{"below the lowest", []LoadStep{{Rate: 10000}}, 1, 5000, []int{5000}},
		{"no steps allowed", []LoadStep{{Rate: 1000, Sustained: true}}, 0, 1000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, steps, err := searchMax(tc.fixed, tc.max, try)
			if err != nil {
				t.Fatal(err)
			}
			var tried []int
			for _, s := range steps {
				tried = append(tried, s.Rate)
			}
			if got != tc.want || !equalInts(tried, tc.tried) {
				t.Errorf("searchMax = %d after %v, want %d after %v", got, tried, tc.want, tc.tried)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSummarize(t *testing.T) {
	var lat []time.Duration
	for i := 1000; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	l := summarize(lat)
	if l.P50 != 500 || l.P99 != 990 || l.P999 != 999 || l.Max != 1000 || l.Mean != 500.5 {
		t.Errorf("summarize = %+v", l)
	}
	if len(l.Quantiles) != len(quantileLevels) || l.Quantiles[0].Ms != 1 {
		t.Errorf("quantiles = %v", l.Quantiles)
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP x
# TYPE sluice_events_dropped_total counter
sluice_events_dropped_total{reason="queue_full",source="http"} 7
sluice_events_dropped_total{reason="queue_full",source="slog"} 1
sluice_events_dropped_total{reason="closed",source="http"} 2
go_goroutines 42
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.byName["sluice_events_dropped_total"] != 10 || m.byName["go_goroutines"] != 42 {
		t.Errorf("by name: %v", m.byName)
	}
	if r := m.byLabel("sluice_events_dropped_total", "reason"); r["queue_full"] != 8 || r["closed"] != 2 {
		t.Errorf("by reason: %v", r)
	}
}

// TestTableOfOlderResults renders results written before the goroutines besides the HTTP connections
// were measured: the column shows —, and the figures that are there still show.
func TestTableOfOlderResults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.json")
	old := `{"schema": 1, "overload": {"rate": 5000, "max_goroutines": 1050, "samples": [{"second": 1, "goroutines": 1050}]},
		"ratios": [{"key": "overload_peak_rss_mb", "name": "Overload: peak RSS of the server", "value": 40, "goal": 150,
		"better": "lower", "met": true, "unit": "MiB"}]}`
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Overload.MaxGoroutinesBesidesConnections != nil {
		t.Errorf("max_goroutines_besides_connections = %d, want nil", *r.Overload.MaxGoroutinesBesidesConnections)
	}
	var table bytes.Buffer
	r.WriteTable(&table)
	if want := "| 1,050 | — |"; !strings.Contains(table.String(), want) {
		t.Errorf("the table has no %q:\n%s", want, table.String())
	}
	if err := r.WritePlot(filepath.Join(t.TempDir(), "old.png")); err != nil {
		t.Error(err)
	}
}

// TestOpenConns checks that the load target counts its connections while they are open, once each.
func TestOpenConns(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	target := newLoadTarget(srv.URL)
	conns := make([]net.Conn, 3)
	for i := range conns {
		c, err := target.client.Transport.(*http.Transport).DialContext(context.Background(), "tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	if n := target.openConns(); n != 3 {
		t.Errorf("%d open after 3 dials, want 3", n)
	}
	var wg sync.WaitGroup
	for range 4 { // closed concurrently, and more than once
		for _, c := range conns[:2] {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
	if n := target.openConns(); n != 1 {
		t.Errorf("%d open after closing 2 of 3, want 1", n)
	}
	_ = conns[2].Close()

	o := attack(context.Background(), target, 200, 200*time.Millisecond, nil)
	if o.errors > 0 || len(o.latencies) == 0 {
		t.Fatalf("attack: %d errors of %d requests", o.errors, len(o.latencies))
	}
	if n := target.openConns(); n < 1 || n > maxInFlight {
		t.Errorf("%d open after an attack (keep-alive), want 1 to %d", n, maxInFlight)
	}
	target.close()
	if n := target.openConns(); n != 0 {
		t.Errorf("%d open after closing the idle connections, want 0", n)
	}
}
