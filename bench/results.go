package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"
)

// SchemaVersion is the version of the JSON keys of Results. Keys are only ever added within a version;
// renaming or removing one makes a new version.
const SchemaVersion = 1

// Results is every figure of a run. Its JSON keys are stable (see SchemaVersion); a scenario that did
// not run is null.
type Results struct {
	Schema    int       `json:"schema"`
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"seconds"` // the whole run
	Quick     bool      `json:"quick"`
	Machine   Machine   `json:"machine"`

	Postgres *PostgresResults `json:"postgres"`
	Blob     *BlobResults     `json:"blob"`
	HTTP     *HTTPResults     `json:"http"`
	Overload *OverloadResults `json:"overload"`
	Bus      *BusResults      `json:"bus"`

	// Ratios are the headline comparisons against their goals.
	Ratios []Ratio `json:"ratios"`
	// Errors holds, by scenario, why a scenario failed.
	Errors map[string]string `json:"errors,omitempty"`
}

// Machine is what the run ran on.
type Machine struct {
	CPUs            int       `json:"cpus"`
	CPUModel        string    `json:"cpu_model"`
	MemTotalBytes   int64     `json:"mem_total_bytes"`
	Kernel          string    `json:"kernel"`
	GoVersion       string    `json:"go_version"`
	OSArch          string    `json:"os_arch"`
	PostgresVersion string    `json:"postgres_version"`
	LoadAvgStart    []float64 `json:"load_avg_start"` // 1, 5 and 15 minutes, from /proc/loadavg
	LoadAvgEnd      []float64 `json:"load_avg_end"`
}

// PostgresResults is the PostgreSQL sink scenario: the same generated events written by each design.
type PostgresResults struct {
	// EventJSONBytes is the mean size of an event's JSON (what the bus carries).
	EventJSONBytes float64 `json:"event_json_bytes"`
	// Sluice: the pipeline (Publish, bounded bus, router, batcher, pgsink) with one route taking every
	// event to PostgreSQL, with that route's default batch policy; timed from the first Publish until
	// Close returned (everything written).
	Sluice PGThroughput `json:"sluice"`
	// RawCopyFrom is the ceiling: the same rows built and written with pgx CopyFrom straight into
	// application_logs, 1,000 rows per COPY, one connection.
	RawCopyFrom PGThroughput `json:"raw_copyfrom"`
	// PerEventInsert is the design sluice replaces: one goroutine and one autocommitted single-row INSERT
	// per event, through a pool of 4 connections (sluice's default).
	PerEventInsert PGThroughput `json:"per_event_insert"`
	// PerEventInsertOneConn is the same through one connection: the commits cannot be grouped.
	PerEventInsertOneConn PGThroughput `json:"per_event_insert_one_conn"`
	// WatermillSQL is Watermill's stock parts: a GoChannel feeding a router whose handler publishes each
	// message with the watermill-sql publisher (DefaultPostgreSQLSchema, one INSERT per message) through
	// a pool of 4 connections.
	WatermillSQL PGThroughput `json:"watermill_sql"`
}

// PGThroughput is one design's run of the PostgreSQL scenario.
type PGThroughput struct {
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"events_per_second"`
	// DBWrites counts the write statements (a COPY, an INSERT, a batch's transaction).
	DBWrites          int     `json:"db_writes"`
	DBWritesPerSecond float64 `json:"db_writes_per_second"`
	// StoredBytesPerEvent is the table's size with its indexes and TOAST over its rows.
	StoredBytesPerEvent float64 `json:"stored_bytes_per_event"`
	// ClientCPUSeconds is the CPU time of this process meanwhile (the design's Go side);
	// PostgresCPUSeconds that of every postgres process on this machine (whoever they served).
	ClientCPUSeconds   float64 `json:"client_cpu_seconds"`
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
}

// BlobResults is the Blob sink scenario, against Azurite.
type BlobResults struct {
	// Sluice: the pipeline with one route taking every event to the archive (gzip NDJSON, one blob per
	// batch), with that route's default batch policy; timed from the first Publish until Close returned.
	Sluice BlobThroughput `json:"sluice"`
	// PerEventBlob is the design sluice replaces: one JSON blob per event, 8 uploads at a time.
	PerEventBlob BlobThroughput `json:"per_event_blob"`
	// OneUpload is the ceiling: every event in one gzip NDJSON blob, one upload (encoding not timed).
	OneUpload BlobThroughput `json:"one_upload"`
}

// BlobThroughput is one design's run of the Blob scenario.
type BlobThroughput struct {
	Events              int     `json:"events"`
	Seconds             float64 `json:"seconds"`
	EventsPerSecond     float64 `json:"events_per_second"`
	Blobs               int     `json:"blobs"`
	BlobsPer1000Events  float64 `json:"blobs_per_1000_events"`
	StoredBytesPerEvent float64 `json:"stored_bytes_per_event"`
	// ClientCPUSeconds is the CPU time of this process meanwhile (the design's Go side).
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
}

// HTTPResults is the HTTP end-to-end scenario: the demo service, a separate process, under a
// constant-rate load on loopback, once per request logging mode.
type HTTPResults struct {
	// Targets describes the request mix.
	Targets string `json:"targets"`
	// SustainedRule says when a step counts as sustained.
	SustainedRule string   `json:"sustained_rule"`
	Off           HTTPMode `json:"off"`  // no logging middleware
	Echo          HTTPMode `json:"echo"` // Echo's RequestLogger, JSON through slog to io.Discard
	// EchoFile is Echo's RequestLogger writing a JSON line per request to a file in the demo's data
	// directory through a buffered writer flushed every second, for a sidecar to ship (no sidecar runs).
	EchoFile HTTPMode `json:"echo_file"`
	Sluice   HTTPMode `json:"sluice"` // sluice, to PostgreSQL and Azurite
}

// HTTPMode is one server's figures.
type HTTPMode struct {
	// Steps are the fixed rates, lowest first.
	Steps []LoadStep `json:"steps"`
	// Search are the steps of the search for the highest sustainable rate.
	Search []LoadStep `json:"search"`
	// MaxSustainedRPS is the highest rate found sustained (see HTTPResults.SustainedRule).
	MaxSustainedRPS int `json:"max_sustained_rps"`
	// CPUSeconds is the server process's user and system CPU time over the fixed-rate steps.
	CPUSeconds float64 `json:"cpu_seconds"`
	// PeakRSSBytes is the server's peak resident memory (VmHWM) after the fixed-rate steps.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// LoadStep is one constant-rate load.
type LoadStep struct {
	Rate        int     `json:"rate"` // requests per second asked for
	Seconds     float64 `json:"seconds"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"` // transport errors, timeouts and 5xx
	AchievedRPS float64 `json:"achieved_rps"`
	Latency     Latency `json:"latency"`
	// ServerCPUSeconds is the server's CPU time during the step.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	Sustained        bool    `json:"sustained"`
}

// Latency summarizes request latencies, in milliseconds.
type Latency struct {
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
	// Quantiles is the distribution, for the plot: the latency at each of quantileLevels.
	Quantiles []Quantile `json:"quantiles"`
}

// Quantile is the latency at one level of the distribution.
type Quantile struct {
	Q  float64 `json:"q"`
	Ms float64 `json:"ms"`
}

// OverloadResults is the overload scenario: the demo with sluice at a rate it sustains, first with its
// storage up (the baseline), then with PostgreSQL and Azurite unreachable.
type OverloadResults struct {
	Rate int `json:"rate"`
	// StorageDown says how the storage was made unreachable.
	StorageDown string   `json:"storage_down"`
	Baseline    LoadStep `json:"baseline"`
	Overload    LoadStep `json:"overload"`
	// PeakRSSBytes is the server's VmHWM at the end, MaxRSSBytes the highest VmRSS sampled with storage
	// down, MaxGoroutines the highest go_goroutines sampled.
	PeakRSSBytes  int64 `json:"peak_rss_bytes"`
	MaxRSSBytes   int64 `json:"max_rss_bytes"`
	MaxGoroutines int   `json:"max_goroutines"`
	// MaxGoroutinesBesidesConnections is the highest, over the samples, of go_goroutines minus the load
	// generator's connections open at the sample (at least 0): the server runs a goroutine per
	// connection, so this is sluice's and the demo's own, what the goal is about. Nil in results of a run
	// from before it was measured.
	MaxGoroutinesBesidesConnections *int `json:"max_goroutines_besides_connections"`
	// EventsPublished and EventsDropped are the server's counters at the end (every source, every
	// reason); DroppedByReason splits the drops.
	EventsPublished float64            `json:"events_published"`
	EventsDropped   float64            `json:"events_dropped"`
	DroppedByReason map[string]float64 `json:"dropped_by_reason"`
	// Samples are taken each second with storage down.
	Samples []OverloadSample `json:"samples"`
}

// OverloadSample is one second of the overload.
type OverloadSample struct {
	Second   int   `json:"second"`
	RSSBytes int64 `json:"rss_bytes"` // VmRSS
	// HeapInuseBytes and StackInuseBytes split the Go runtime's part of it (go_memstats_*).
	HeapInuseBytes  int64 `json:"heap_inuse_bytes"`
	StackInuseBytes int64 `json:"stack_inuse_bytes"`
	Goroutines      int   `json:"goroutines"`
	// HTTPConnections is how many connections the load generator had open to the server when the sample
	// was taken; the server runs a goroutine for each (and, while it handles a request on one, another
	// that watches the connection).
	HTTPConnections int     `json:"http_connections"`
	QueueDepth      float64 `json:"queue_depth"`
	EventsDropped   float64 `json:"events_dropped"` // so far
	Requests        int     `json:"requests"`       // answered in this second
	P99Ms           float64 `json:"p99_ms"`         // of those
}

// goroutinesBesidesConnections is go_goroutines minus a goroutine per HTTP connection open, at least 0.
func (s OverloadSample) goroutinesBesidesConnections() int {
	return max(0, s.Goroutines-s.HTTPConnections)
}

// BusResults is the bus scenario: the same kind of events (warnings, for the PostgreSQL route) from a
// web node's Publish to rows committed in PostgreSQL, through the in-process bus and through each
// broker driver, and next to each broker the stock design on it.
type BusResults struct {
	// EventJSONBytes is the mean size of an event's JSON.
	EventJSONBytes float64 `json:"event_json_bytes"`
	// Workers is how many workers (sluice.NewWorker) write what the web node forwards, and how many
	// subscriptions the stock design reads with; Publishers how many goroutines publish in a tight
	// loop.
	Workers    int `json:"workers"`
	Publishers int `json:"publishers"`
	// Runs is how many times each bus was measured (Config.BusRuns); the figures are each bus's
	// median run.
	Runs int `json:"runs"`
	// InProcess is one pipeline with the memory bus (sluice.New, no broker) that publishes and
	// writes: the rate a broker is measured against; its median run by events/s. Null when it did
	// not run.
	InProcess *BusThroughput `json:"in_process"`
	// InProcessRuns holds every run of InProcess, in order, when there were several.
	InProcessRuns []BusThroughput `json:"in_process_runs,omitempty"`
	// Brokers holds each broker driver's figures, by driver name (bus.driver).
	Brokers map[string]*BusBroker `json:"brokers"`
}

// BusBroker is one broker driver's figures: its median run (by sluice / stock) and every run.
type BusBroker struct {
	BusPair
	// Runs holds every run, in order, when there were several.
	Runs []BusPair `json:"runs,omitempty"`
	// Error says why the broker's measurement failed (its figures are then partial).
	Error string `json:"error,omitempty"`
}

// BusPair is one run of both designs through a broker.
type BusPair struct {
	// Sluice: a web node (sluice.New with bus.driver set: chunks of events, one broker message per
	// chunk) and Workers workers (sluice.NewWorker: each chunk one batch, COPY), in this process,
	// with the defaults of bus.forward, the driver's section and the postgres route.
	Sluice BusThroughput `json:"sluice"`
	// Stock is Watermill's stock design on the same broker, with Watermill's own adapter for it: one
	// message per event through the adapter's Publisher, and per worker the adapter's Subscriber and
	// a message.Router whose handler INSERTs the message's event.
	Stock BusThroughput `json:"stock"`
}

// Ratio is sluice's events/s over the stock design's.
func (p BusPair) Ratio() float64 { return div(p.Sluice.EventsPerSecond, p.Stock.EventsPerSecond) }

// BusThroughput is one design's run of the bus scenario, timed from the first Publish until the last
// event's row was committed.
type BusThroughput struct {
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"events_per_second"`
	// StoredEvents is count(*) of application_logs afterwards: Events when nothing was lost or
	// stored twice.
	StoredEvents int `json:"stored_events"`
	// BrokerMessages counts the messages published to the broker (sluice: the web node's chunk
	// publishes, retries included); DBWrites the sink's write transactions.
	BrokerMessages int `json:"broker_messages"`
	DBWrites       int `json:"db_writes"`
	// ClientCPUSeconds is this process's CPU time (web node, workers and, for the stock design, the
	// handlers); PostgresCPUSeconds that of every postgres process; BrokerCPUSeconds that of every
	// process of the broker's server command (redis-server, nats-server, beam.smp, kfake; postgres
	// for the postgres driver, counted in both), whoever they served.
	ClientCPUSeconds   float64 `json:"client_cpu_seconds"`
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
	BrokerCPUSeconds   float64 `json:"broker_cpu_seconds"`
	// Where the time went (sluice only), each summed over whoever did it at once: PublishWaitSeconds
	// the publishing goroutines slept on a full local bus (the web node waiting on its forwarding);
	// ForwardSeconds the web node's publishes to the broker took (sluice_sink_write_seconds of its
	// forward route: a chunk's round trip until the broker acknowledged it); SinkWriteSeconds the
	// writers' PostgreSQL writes took (sluice_sink_write_seconds of the postgres route).
	PublishWaitSeconds float64 `json:"publish_wait_seconds"`
	ForwardSeconds     float64 `json:"forward_seconds"`
	SinkWriteSeconds   float64 `json:"sink_write_seconds"`
}

// Ratio is a headline comparison and its goal.
type Ratio struct {
	Key   string  `json:"key"`
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	// Goal is met when Value is at least Goal (Better "higher") or at most Goal (Better "lower").
	Goal   float64 `json:"goal"`
	Better string  `json:"better"`
	Met    bool    `json:"met"`
	Unit   string  `json:"unit,omitempty"`
	Note   string  `json:"note,omitempty"`
}

// The keys of the headline ratios.
const (
	RatioPGOverCopyFrom     = "pg_sluice_over_raw_copyfrom"
	RatioPGOverPerEvent     = "pg_sluice_over_per_event_insert"
	RatioPGOverWatermill    = "pg_sluice_over_watermill_sql"
	RatioBlobOverPerEvent   = "blob_sluice_over_per_event_blob"
	RatioBlobOverOneUpload  = "blob_sluice_over_one_upload"
	RatioHTTPP99SluiceOff   = "http_p99_sluice_over_off"
	RatioHTTPP99EchoOff     = "http_p99_echo_over_off"
	RatioHTTPP99EchoFileOff = "http_p99_echo_file_over_off"
	RatioOverloadPeakRSSMB  = "overload_peak_rss_mb"
	RatioOverloadP99Change  = "overload_p99_down_over_up"
	RatioOverloadGoroutines = "overload_goroutines_besides_connections"
	// RatioBusOverStockPrefix + a driver's name: sluice / the stock design through that broker.
	RatioBusOverStockPrefix = "bus_sluice_over_stock_"
	// RatioBusBrokerOverInProcess: the faster of Redis and NATS into PostgreSQL / the in-process bus.
	RatioBusBrokerOverInProcess = "bus_redis_or_nats_over_in_process"
	ratioGoalHTTPRate           = 5000
	ratioNoGoal                 = 0
	betterHigher, betterLow     = "higher", "lower"
)

// ratios computes the headline ratios of what ran.
func ratios(r *Results) []Ratio {
	var out []Ratio
	add := func(key, name string, value, goal float64, better, unit, note string) {
		met := goal == ratioNoGoal || (better == betterHigher && value >= goal) || (better == betterLow && value <= goal)
		out = append(out, Ratio{Key: key, Name: name, Value: value, Goal: goal, Better: better, Met: met, Unit: unit, Note: note})
	}
	if pg := r.Postgres; pg != nil {
		s := pg.Sluice.EventsPerSecond
		add(RatioPGOverCopyFrom, "PostgreSQL: sluice / raw CopyFrom ceiling", div(s, pg.RawCopyFrom.EventsPerSecond), 0.8, betterHigher, "x", "")
		add(RatioPGOverPerEvent, "PostgreSQL: sluice / per-event INSERT", div(s, pg.PerEventInsert.EventsPerSecond), 20, betterHigher, "x",
			fmt.Sprintf("%d connections; through one: %.1fx", poolConns, div(s, pg.PerEventInsertOneConn.EventsPerSecond)))
		add(RatioPGOverWatermill, "PostgreSQL: sluice / Watermill SQL publisher per message", div(s, pg.WatermillSQL.EventsPerSecond), ratioNoGoal, betterHigher, "x", "")
	}
	if b := r.Blob; b != nil {
		s := b.Sluice.EventsPerSecond
		add(RatioBlobOverPerEvent, "Blob: sluice / one blob per event", div(s, b.PerEventBlob.EventsPerSecond), 100, betterHigher, "x", "")
		add(RatioBlobOverOneUpload, "Blob: sluice / one large upload (ceiling)", div(s, b.OneUpload.EventsPerSecond), ratioNoGoal, betterHigher, "x", "")
	}
	if h := r.HTTP; h != nil {
		rate, p99 := p99AtRate(h, ratioGoalHTTPRate)
		off := p99(h.Off)
		note := fmt.Sprintf("at %d requests/s", rate)
		add(RatioHTTPP99SluiceOff, "HTTP p99: sluice / logging off", div(p99(h.Sluice), off), 1.1, betterLow, "x", note)
		add(RatioHTTPP99EchoOff, "HTTP p99: Echo request logger / logging off", div(p99(h.Echo), off), ratioNoGoal, betterLow, "x", note)
		add(RatioHTTPP99EchoFileOff, "HTTP p99: Echo request logger to a file / logging off", div(p99(h.EchoFile), off),
			ratioNoGoal, betterLow, "x", note)
	}
	if o := r.Overload; o != nil {
		add(RatioOverloadPeakRSSMB, "Overload: peak RSS of the server", float64(o.PeakRSSBytes)/(1<<20), 150, betterLow, "MiB",
			fmt.Sprintf("%d requests/s for %.0f s, storage down", o.Rate, o.Overload.Seconds))
		add(RatioOverloadP99Change, "Overload: p99 storage down / storage up", div(o.Overload.Latency.P99, o.Baseline.Latency.P99), ratioNoGoal, betterLow, "x", "")
		if g := o.MaxGoroutinesBesidesConnections; g != nil {
			add(RatioOverloadGoroutines, "Overload: sluice's goroutines besides HTTP connections", float64(*g), 300, betterLow, "goroutines",
				fmt.Sprintf("most sampled; with the connections: %s", count(float64(o.MaxGoroutines))))
		}
	}
	if b := r.Bus; b != nil {
		for _, name := range slices.Sorted(maps.Keys(b.Brokers)) {
			br := b.Brokers[name]
			note := fmt.Sprintf("%s events/s against %s", count(br.Sluice.EventsPerSecond), count(br.Stock.EventsPerSecond))
			if len(br.Runs) > 1 {
				note += "; the median of " + br.runRatios()
			}
			add(RatioBusOverStockPrefix+name, "Bus: sluice / one message per event, through "+name,
				br.Ratio(), 20, betterHigher, "x", note)
		}
		var best string
		for _, name := range []string{"redis", "nats"} {
			if br := b.Brokers[name]; br != nil && (best == "" || br.Sluice.EventsPerSecond > b.Brokers[best].Sluice.EventsPerSecond) {
				best = name
			}
		}
		if best != "" && b.InProcess != nil {
			add(RatioBusBrokerOverInProcess, "Bus: through "+best+" / in-process, into PostgreSQL",
				div(b.Brokers[best].Sluice.EventsPerSecond, b.InProcess.EventsPerSecond), 0.5, betterHigher, "x",
				fmt.Sprintf("%s events/s against %s; the faster of redis and nats", count(b.Brokers[best].Sluice.EventsPerSecond),
					count(b.InProcess.EventsPerSecond)))
		}
	}
	return out
}

// p99AtRate returns the fixed rate the modes are compared at: rate, or the highest fixed rate below it
// when none ran at rate (a quick run); and what returns a mode's p99 at that rate (0 if it did not run).
func p99AtRate(h *HTTPResults, rate int) (at int, p99 func(HTTPMode) float64) {
	at = 0
	for _, s := range h.Off.Steps {
		if s.Rate <= rate && s.Rate > at {
			at = s.Rate
		}
	}
	return at, func(m HTTPMode) float64 {
		for _, s := range m.Steps {
			if s.Rate == at {
				return s.Latency.P99
			}
		}
		return 0
	}
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// WriteJSON writes r to path, indented.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads results that WriteJSON wrote.
func ReadJSON(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s: schema %d, this sluice reads %d", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}
