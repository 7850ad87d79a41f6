// Package bench owns `sluice-bench`: the scenarios that measure sluice, in one run on one machine,
// against the designs it replaces and against the physical ceilings of the machine (PostgreSQL sink,
// Blob sink, HTTP end to end, overload with storage down, a web node to PostgreSQL through each
// broker); the Results they produce, with stable JSON
// keys; the results table; and the plot drawn from the results.
//
// The sink scenarios run in this process, and so do the bus scenario's web node and workers (the
// brokers are this machine's servers; Kafka is a kfake process it starts). The HTTP scenarios run the sluice binary's demo as a
// separate process, so that its CPU time and memory are its own. Every measurement works on storage of
// its own (a fresh database, a fresh container, a topic and groups) and removes it afterwards; a
// broker's topics and groups, named sluice_bench_*, stay (brokers.Broker deletes nothing), emptied.
//
// It is a measuring tool, not a test: it checks that what was written is all there, but it asserts no
// timing. cmd/sluice only parses flags and calls Run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The scenarios, in the order Run runs them.
const (
	ScenarioPostgres = "postgres" // the PostgreSQL sink against raw CopyFrom, per-event INSERT and Watermill's SQL publisher
	ScenarioBlob     = "blob"     // the Blob sink against one blob per event and one large upload
	ScenarioHTTP     = "http"     // the demo service at fixed rates: sluice, logging off, Echo's request logger (discarded, and to a file)
	ScenarioOverload = "overload" // the demo at its highest sustainable rate with PostgreSQL and Azurite down
	ScenarioBus      = "bus"      // a web node to PostgreSQL through each broker, against the in-process bus and one message per event
)

// Scenarios lists every scenario in the order Run runs them.
var Scenarios = []string{ScenarioPostgres, ScenarioBlob, ScenarioHTTP, ScenarioOverload, ScenarioBus}

// Defaults of Config.
const (
	DefaultPostgresDSN      = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultOverloadDuration = 60 * time.Second
	DefaultOverloadRate     = 5000
	quickOverloadDuration   = 3 * time.Second
)

// Config says what a run measures and against what. Zero fields take their defaults; Azurite (for the
// blob scenario) and ServerBinary (for the HTTP scenarios) have none.
type Config struct {
	// Scenarios to run, by name; empty runs every one.
	Scenarios []string
	// Quick runs every scenario with tiny sizes and short steps, in well under a minute: a smoke test
	// that the harness works, whose figures mean little.
	Quick bool
	// PostgresDSN connects as a user that may CREATE DATABASE: each measurement makes its own database
	// and drops it afterwards. Default DefaultPostgresDSN.
	PostgresDSN string
	// Azurite is the connection string of the Azure Blob service (Azurite) written to; each measurement
	// makes its own container and deletes it afterwards.
	Azurite string
	// ServerBinary is the sluice binary whose `demo` the HTTP scenarios run (os.Executable() in the
	// sluice binary itself).
	ServerBinary string
	// ServerProfileDir, when set, receives a CPU and a heap profile of each demo process:
	// demo-MODE.cpu.pprof and demo-MODE.heap.pprof for the HTTP scenario's modes, demo-overload.*.
	ServerProfileDir string
	// ServerEnv is added to every demo's environment, after the harness's own variables: to measure a
	// configuration other than the defaults (SLUICE_BUS_MAX_IN_FLIGHT=500, GOGC=50, ...).
	ServerEnv map[string]string
	// OverloadDuration is how long the overload scenario runs with storage down. Default 60 s (3 s when
	// Quick).
	OverloadDuration time.Duration
	// OverloadRate is the request rate of the overload scenario. Zero means the highest rate the HTTP
	// scenario found sluice to sustain in this run, or DefaultOverloadRate when it did not run.
	OverloadRate int
	// BusDrivers are what the bus scenario measures: "memory" (the in-process bus) and broker drivers
	// by name. Empty means memory and every registered driver (package brokers/all registers them).
	BusDrivers []string
	// BusURLs gives a broker's bus.url by driver name. A driver without one is found at
	// SLUICE_TEST_<DRIVER>_URL, else at this machine kind's default (redis://127.0.0.1:6379/0,
	// nats://127.0.0.1:4222, amqp://guest:guest@127.0.0.1:5672/); kafka is a kfake process started
	// for the run, postgres a fresh database on PostgresDSN's server.
	BusURLs map[string]string
	// BusWorkers is how many workers write what the web node forwards, and how many subscriptions
	// the stock design reads with. Default DefaultBusWorkers.
	BusWorkers int
	// BusRuns is how many times the bus scenario measures each bus, one round over every bus after
	// the other (so that a slow minute of the machine falls on all of them): the figures reported
	// are each bus's median run. Default 1.
	BusRuns int
	// Progress receives a line per step as the run goes (nil: nothing).
	Progress io.Writer
}

func (c *Config) setDefaults() {
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	if c.PostgresDSN == "" {
		c.PostgresDSN = DefaultPostgresDSN
	}
	if c.OverloadDuration == 0 {
		c.OverloadDuration = DefaultOverloadDuration
		if c.Quick {
			c.OverloadDuration = quickOverloadDuration
		}
	}
	if len(c.BusDrivers) == 0 {
		c.BusDrivers = busDrivers()
	}
	if c.BusWorkers == 0 {
		c.BusWorkers = DefaultBusWorkers
	}
	if c.BusRuns == 0 {
		c.BusRuns = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate reports the first invalid field, naming it and its value.
func (c Config) Validate() error {
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("`scenarios`: unknown scenario %q (known: %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	for _, d := range c.BusDrivers {
		if !slices.Contains(busDrivers(), d) {
			return fmt.Errorf("`bus_drivers`: unknown bus %q (known here: %s)", d, strings.Join(busDrivers(), ", "))
		}
	}
	for d := range c.BusURLs {
		if !slices.Contains(busDrivers()[1:], d) {
			return fmt.Errorf("`bus_urls`: %q is no registered broker driver (known here: %s)", d, strings.Join(busDrivers()[1:], ", "))
		}
	}
	switch {
	case c.runs(ScenarioBlob) && c.Azurite == "":
		return errors.New("`azurite`: the blob scenario needs an Azurite connection string (scripts/azurite.sh start prints one)")
	case c.runs(ScenarioOverload) && c.Azurite == "":
		return errors.New("`azurite`: the overload scenario needs an Azurite connection string: it takes the archive down")
	case (c.runs(ScenarioHTTP) || c.runs(ScenarioOverload)) && c.ServerBinary == "":
		return errors.New("`server_binary`: the HTTP scenarios need the sluice binary to run `sluice demo`")
	case c.OverloadDuration < 0:
		return fmt.Errorf("`overload_duration` (%s) must not be negative", c.OverloadDuration)
	case c.OverloadRate < 0:
		return fmt.Errorf("`overload_rate` (%d) must not be negative", c.OverloadRate)
	case c.BusWorkers < 0:
		return fmt.Errorf("`bus_workers` (%d) must not be negative", c.BusWorkers)
	case c.BusRuns < 0:
		return fmt.Errorf("`bus_runs` (%d) must not be negative", c.BusRuns)
	}
	return nil
}

func (c Config) runs(scenario string) bool {
	return len(c.Scenarios) == 0 || slices.Contains(c.Scenarios, scenario)
}

// plan is the sizes and durations of a run: full or quick.
type plan struct {
	pgEvents        int // sluice and raw CopyFrom
	insertEvents    int // one goroutine and one INSERT per event
	watermillEvents int // GoChannel and the SQL publisher, one INSERT per message
	blobEvents      int // sluice and the one large upload
	perEventBlobs   int // one blob per event

	rates      []int         // the fixed rates of the HTTP scenario
	warmup     time.Duration // before the fixed rates, at the lowest one
	step       time.Duration // each fixed rate, for each mode
	round      time.Duration // a fixed rate's steps are interleaved in rounds this long
	searchStep time.Duration // each step of the search for the highest sustainable rate
	searchMax  int           // steps of that search at most

	baseline time.Duration // the overload scenario's first part, storage up
	overload time.Duration // and its second, storage down

	busEvents      int // sluice through each bus, web node to PostgreSQL
	busStockEvents int // a broker message and an INSERT per event
}

func planFor(c Config) plan {
	if c.Quick {
		return plan{
			pgEvents: 2000, insertEvents: 200, watermillEvents: 200, blobEvents: 2000, perEventBlobs: 100,
			rates: []int{200, 1000}, warmup: 300 * time.Millisecond, step: time.Second, round: time.Second,
			searchStep: time.Second, searchMax: 1,
			baseline: time.Second, overload: c.OverloadDuration,
			busEvents: 3000, busStockEvents: 300,
		}
	}
	return plan{
		pgEvents: 50000, insertEvents: 5000, watermillEvents: 10000, blobEvents: 50000, perEventBlobs: 2000,
		rates: []int{1000, 5000, 10000}, warmup: 3 * time.Second, step: 10 * time.Second, round: 2 * time.Second,
		searchStep: 5 * time.Second, searchMax: 6,
		baseline: 10 * time.Second, overload: c.OverloadDuration,
		busEvents: 200000, busStockEvents: 10000,
	}
}

// Run runs the configured scenarios in order and returns every figure they produced. A scenario that
// fails is recorded in Results.Errors and the others still run; the error returned joins them all.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench: invalid config: %w", err)
	}
	if cfg.ServerProfileDir != "" {
		// The demos run in directories of their own: they get the profile directory absolute, and
		// existing (they only create their files).
		dir, err := filepath.Abs(cfg.ServerProfileDir)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: server profiles: %w", err)
		}
		cfg.ServerProfileDir = dir
	}
	start := time.Now()
	pr := &progress{w: cfg.Progress, start: start}
	r := &Results{Schema: SchemaVersion, StartedAt: start.UTC(), Quick: cfg.Quick}
	r.Machine = readMachine(ctx, cfg.PostgresDSN)
	pl := planFor(cfg)
	var errs []error
	fail := func(scenario string, err error) {
		if r.Errors == nil {
			r.Errors = map[string]string{}
		}
		r.Errors[scenario] = err.Error()
		errs = append(errs, fmt.Errorf("%s: %w", scenario, err))
		pr.say("%s: FAILED: %v", scenario, err)
	}
	for _, s := range Scenarios {
		if !cfg.runs(s) {
			continue
		}
		if err := ctx.Err(); err != nil {
			fail(s, err)
			continue
		}
		pr.say("scenario %s", s)
		var err error
		switch s {
		case ScenarioPostgres:
			r.Postgres, err = runPostgres(ctx, cfg, pl, pr)
		case ScenarioBlob:
			r.Blob, err = runBlob(ctx, cfg, pl, pr)
		case ScenarioHTTP:
			r.HTTP, err = runHTTP(ctx, cfg, pl, pr)
		case ScenarioOverload:
			rate := cfg.OverloadRate
			if rate == 0 {
				rate = DefaultOverloadRate
				if r.HTTP != nil && r.HTTP.Sluice.MaxSustainedRPS > 0 {
					rate = r.HTTP.Sluice.MaxSustainedRPS
				}
			}
			r.Overload, err = runOverload(ctx, cfg, pl, rate, pr)
		case ScenarioBus:
			r.Bus, err = runBus(ctx, cfg, pl, pr)
		}
		if err != nil {
			fail(s, err)
		}
	}
	r.Machine.LoadAvgEnd = loadAvg()
	r.Seconds = time.Since(start).Seconds()
	r.Ratios = ratios(r)
	return r, errors.Join(errs...)
}

// progress prints one line per step, stamped with the time since the run started.
type progress struct {
	w     io.Writer
	start time.Time
}

func (p *progress) say(format string, args ...any) {
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// every prints what status returns every period until the returned stop is called: the pulse of a
// long step.
func (p *progress) every(period time.Duration, status func() string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.say("  ... %s", status())
			}
		}
	}()
	return func() { close(done); <-finished }
}
