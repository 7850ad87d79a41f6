package bench

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/brokers"
	_ "github.com/sluicelog/sluice/brokers/all" // every driver sluice ships: the scenario measures each one registered
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/brokerclean"
	"github.com/sluicelog/sluice/internal/testenv"
)

// BusMemory is the bus scenario's name for the in-process bus (bus.driver: memory): one pipeline that
// publishes and writes.
const BusMemory = brokers.Memory

// DefaultBusWorkers is how many worker pipelines write what a web node forwards, and how many
// subscriptions the stock design reads with.
const DefaultBusWorkers = 2

// busPublishers is how many goroutines publish events in a tight loop, as a busy web node's request
// handlers do.
const busPublishers = 4

// busRoute is the one route of the bus scenario: warnings and errors to PostgreSQL, with the postgres
// sink's default policies.
var busRoute = sluice.Route{Name: config.SinkPostgres, Sink: config.SinkPostgres,
	Levels: []string{string(event.LevelWarn), string(event.LevelError)}}

// busDefaultURLs are where the bus scenario finds each broker of this machine kind when neither
// Config.BusURLs nor SLUICE_TEST_<DRIVER>_URL says otherwise. Kafka is a kfake process the scenario
// starts itself, and PostgreSQL a fresh database on Config.PostgresDSN's server.
var busDefaultURLs = map[string]string{
	"redis": "redis://127.0.0.1:6379/0",
	"nats":  "nats://127.0.0.1:4222",
	"amqp":  "amqp://guest:guest@127.0.0.1:5672/",
}

// brokerProcess is the command name of each broker's server process, whose CPU time the scenario
// reads (of every process of that name on the machine, whoever it served).
var brokerProcess = map[string]string{
	"redis": "redis-server", "nats": "nats-server", "amqp": "beam.smp", "kafka": "kfake", "postgres": "postgres",
}

// busDrivers returns the names the bus scenario measures by default: the in-process bus, then every
// registered broker driver.
func busDrivers() []string { return append([]string{BusMemory}, brokers.Names()...) }

// runBus measures, for the in-process bus and for each broker driver, events/s from a web node's
// Publish to rows committed in PostgreSQL by the workers, and next to each broker the stock design on
// the same broker: Config.BusRuns rounds over every bus, each bus's median run reported. A broker
// that fails is recorded in its own entry (and measured no more) and the others still run.
func runBus(ctx context.Context, cfg Config, pl plan, pr *progress) (*BusResults, error) {
	res := &BusResults{Workers: cfg.BusWorkers, Publishers: busPublishers, Runs: cfg.BusRuns, Brokers: map[string]*BusBroker{}}
	var jsonBytes, n int
	for _, e := range busEvents(min(pl.busEvents, 1000)) {
		b, err := e.AppendJSON(nil)
		if err != nil {
			return nil, err
		}
		jsonBytes, n = jsonBytes+len(b), n+1
	}
	res.EventJSONBytes = div(float64(jsonBytes), float64(n))
	var (
		errs      []error
		inProcess []BusThroughput
	)
	for run := 1; run <= cfg.BusRuns; run++ {
		for _, name := range cfg.BusDrivers {
			of := ""
			if cfg.BusRuns > 1 {
				of = fmt.Sprintf(" (run %d of %d)", run, cfg.BusRuns)
			}
			if name == BusMemory {
				if run > 1 && len(inProcess) == 0 {
					continue // failed in an earlier round
				}
				pr.say("bus: in-process, %d events%s", pl.busEvents, of)
				var t BusThroughput
				err := measurement(ctx, cfg, pr, BusMemory, "sluice", func(ctx context.Context) (err error) {
					t, err = busSluice(ctx, cfg, pl.busEvents, BusMemory, "", pr)
					return err
				})
				if err != nil {
					errs = append(errs, fmt.Errorf("in-process: %w", err))
					inProcess = nil
					continue
				}
				inProcess = append(inProcess, t)
				pr.say("bus: in-process: %.0f events/s", t.EventsPerSecond)
				continue
			}
			b := res.Brokers[name]
			if b == nil {
				b = &BusBroker{}
				res.Brokers[name] = b
			}
			if b.Error != "" {
				continue
			}
			pr.say("bus: %s%s", name, of)
			pair, err := busBroker(ctx, cfg, pl, name, pr)
			if err != nil {
				b.BusPair, b.Error = pair, err.Error()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				pr.say("bus: %s: FAILED: %v", name, err)
				continue
			}
			b.Runs = append(b.Runs, pair)
		}
	}
	if len(inProcess) > 0 {
		t := median(inProcess, func(t BusThroughput) float64 { return t.EventsPerSecond })
		res.InProcess = &t
		if len(inProcess) > 1 {
			res.InProcessRuns = inProcess
		}
	}
	for _, b := range res.Brokers {
		if b.Error == "" && len(b.Runs) > 0 {
			b.BusPair = median(b.Runs, BusPair.Ratio)
		}
		if len(b.Runs) < 2 {
			b.Runs = nil
		}
	}
	return res, errors.Join(errs...)
}

// median returns the element of runs (not empty) with the median value by, the lower of the middle
// two when their number is even: always one that was measured.
func median[T any](runs []T, by func(T) float64) T {
	sorted := slices.SortedStableFunc(slices.Values(runs), func(a, b T) int { return cmp.Compare(by(a), by(b)) })
	return sorted[(len(sorted)-1)/2]
}

// runRatios lists the ratios of b's runs, in order: "3 runs: 16.2x, 21.0x, 19.3x".
func (b *BusBroker) runRatios() string {
	rs := make([]string, len(b.Runs))
	for i, r := range b.Runs {
		rs[i] = fixed(r.Ratio(), 1) + "x"
	}
	return fmt.Sprintf("%d runs: %s", len(b.Runs), strings.Join(rs, ", "))
}

// busBroker measures sluice and the stock design through one broker driver.
func busBroker(ctx context.Context, cfg Config, pl plan, name string, pr *progress) (BusPair, error) {
	var p BusPair
	url, stop, err := brokerURL(ctx, cfg, name, pr)
	if err != nil {
		return p, err
	}
	defer stop()
	pr.say("bus: %s: sluice (a web node, %d workers), %d events", name, cfg.BusWorkers, pl.busEvents)
	if err := measurement(ctx, cfg, pr, name, "sluice", func(ctx context.Context) (err error) {
		p.Sluice, err = busSluice(ctx, cfg, pl.busEvents, name, url, pr)
		return err
	}); err != nil {
		return p, fmt.Errorf("sluice: %w", err)
	}
	pr.say("bus: %s: sluice: %.0f events/s in %d broker messages", name, p.Sluice.EventsPerSecond, p.Sluice.BrokerMessages)
	pr.say("bus: %s: stock design (Watermill's adapter, a message per event, %d subscriptions), %d events", name, cfg.BusWorkers, pl.busStockEvents)
	if err := measurement(ctx, cfg, pr, name, "stock", func(ctx context.Context) (err error) {
		p.Stock, err = busStock(ctx, cfg, pl.busStockEvents, name, url, pr)
		return err
	}); err != nil {
		return p, fmt.Errorf("stock design: %w", err)
	}
	pr.say("bus: %s: stock design: %.0f events/s; sluice is %.1fx", name, p.Stock.EventsPerSecond, p.Ratio())
	return p, nil
}

// labelled runs f with the pprof label key=value added to ctx's, which the goroutines it starts (the
// pipelines', the routers') inherit. A measurement is labelled bus=<driver> and design=sluice or
// stock, and sluice's pipelines role=web or role=worker: in a profile of sluice-bench -cpuprofile,
// -tagfocus bus=redis -tagfocus role=worker is the workers over Redis alone.
func labelled(ctx context.Context, key, value string, f func(context.Context) error) error {
	var err error
	pprof.Do(ctx, pprof.Labels(key, value), func(ctx context.Context) { err = f(ctx) })
	return err
}

// measurement runs f labelled bus=<bus> and design=<design> (see labelled), after a CHECKPOINT of the
// PostgreSQL server: each measurement starts with nothing of the one before left to write (without
// it, the stock design's commits, each waiting for its WAL to be flushed, queued behind the writing
// out of the 200,000 rows that sluice had just stored, and its rate moved by half from run to run).
func measurement(ctx context.Context, cfg Config, pr *progress, bus, design string, f func(context.Context) error) error {
	if err := checkpoint(ctx, cfg.PostgresDSN); err != nil {
		pr.say("bus: %s: %s: no CHECKPOINT before the measurement: %v", bus, design, err)
	}
	return labelled(ctx, "bus", bus, func(ctx context.Context) error { return labelled(ctx, "design", design, f) })
}

// checkpoint runs a CHECKPOINT on the server of dsn (it needs a superuser, or pg_checkpoint's role).
func checkpoint(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CHECKPOINT")
	return err
}

// removeAfter removes the measurement's topic and its groups from the broker, with whatever they still
// hold (a Redis stream holds every chunk until a worker's next trim, 10 s after it starts; the
// measurements end sooner), so that a run leaves a long-lived broker as it found it; it says so if
// it cannot.
func removeAfter(ctx context.Context, driver, url, topic string, groups []string, pr *progress) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := brokerclean.Topic(ctx, driver, url, topic, groups); err != nil {
		pr.say("bus: %s: topic %s left on the broker: %v", driver, topic, err)
	}
}

// brokerURL returns where the driver's broker is, and what to call when done with it: the URL in
// Config.BusURLs, else in SLUICE_TEST_<DRIVER>_URL, else this machine kind's default; for kafka
// without one, a kfake process started now (stopped by stop); for postgres, a fresh database (dropped
// by stop) on the server of Config.PostgresDSN.
func brokerURL(ctx context.Context, cfg Config, name string, pr *progress) (url string, stop func(), err error) {
	if u := cfg.BusURLs[name]; u != "" {
		return u, func() {}, nil
	}
	if u := os.Getenv("SLUICE_TEST_" + strings.ToUpper(name) + "_URL"); u != "" {
		return u, func() {}, nil
	}
	switch name {
	case "kafka":
		// kfake as the kafka driver's tests run it: built from internal/kfake, a process of its own
		// on a free port, with a data directory.
		dir, err := os.MkdirTemp("", "sluice-bench-kfake")
		if err != nil {
			return "", nil, err
		}
		k, err := testenv.StartKafka(testenv.KafkaOptions{}, dir)
		if err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		pr.say("bus: kafka: kfake started on %s", k.Addr())
		return k.Addr(), func() { k.Close(); os.RemoveAll(dir) }, nil
	case "postgres":
		return freshDatabase(ctx, cfg.PostgresDSN)
	}
	if u := busDefaultURLs[name]; u != "" {
		return u, func() {}, nil
	}
	return "", nil, fmt.Errorf("no URL for the %s broker: give one with -bus-url %s=URL or SLUICE_TEST_%s_URL",
		name, name, strings.ToUpper(name))
}

// busEvents returns n generated events (about 1.1 KB of JSON each), every one a warning: what the
// PostgreSQL route takes.
func busEvents(n int) []*event.Event {
	events := generate(n)
	for _, e := range events {
		e.Level = event.LevelWarn
	}
	return events
}

// busConfig is the configuration of the scenario's pipelines: the one PostgreSQL route writing into
// dsn, over the named bus (a topic and groups of their own on a broker).
func busConfig(dsn, driver, url string) sluice.Config {
	c := sluice.DefaultConfig()
	c.Service = "bench"
	c.Postgres.DSN = dsn
	c.Routes = []sluice.Route{busRoute}
	if driver != BusMemory {
		c.Bus.Driver, c.Bus.URL = driver, url
		c.Bus.Topic, c.Bus.Group = uniqueName("sluice_bench_"), uniqueName("sluice_bench_")
	}
	return c
}

// busSluice runs sluice on a fresh database: with the memory bus, one pipeline that publishes and
// writes; with a broker, workers (NewWorker) started first, then a web node (New) that forwards. The
// time runs from the first Publish until the writers' sinks have written the last event (its
// transaction committed), the web node closed meanwhile, which forwards its open chunks at once.
func busSluice(ctx context.Context, cfg Config, n int, driver, url string, pr *progress) (BusThroughput, error) {
	var t BusThroughput
	dsn, drop, err := freshDatabase(ctx, cfg.PostgresDSN)
	if err != nil {
		return t, err
	}
	defer drop()
	c := busConfig(dsn, driver, url)
	defer removeAfter(ctx, driver, url, c.Bus.Topic, []string{c.Bus.Group + "." + busRoute.Name}, pr) // after the pipelines' Close
	quiet := sluice.WithLogger(slog.New(slog.DiscardHandler))
	var writers []*sluice.Pipeline
	defer func() {
		for _, w := range writers {
			_ = w.Close(context.Background())
		}
	}()
	if driver != BusMemory {
		for range cfg.BusWorkers { // one after the other: the first applies the migrations
			var w *sluice.Pipeline
			err := labelled(ctx, "role", "worker", func(ctx context.Context) (err error) {
				w, err = sluice.NewWorker(ctx, c, quiet)
				return err
			})
			if err != nil {
				return t, fmt.Errorf("worker: %w", err)
			}
			writers = append(writers, w)
		}
	}
	var web *sluice.Pipeline
	err = labelled(ctx, "role", "web", func(ctx context.Context) (err error) {
		web, err = sluice.New(ctx, c, quiet)
		return err
	})
	if err != nil {
		return t, fmt.Errorf("web node: %w", err)
	}
	defer web.Close(context.Background()) // a no-op after the Close below; closes on an early return
	if driver == BusMemory {
		writers = []*sluice.Pipeline{web}
	}
	templates := busEvents(min(n, busTemplates))
	written := func() (float64, error) {
		var sum float64
		for _, w := range writers {
			m, err := pipelineMetrics(w)
			if err != nil {
				return 0, err
			}
			sum += m.byLabel("sluice_sink_events_written_total", "route")[busRoute.Name]
		}
		return sum, nil
	}
	var published atomic.Int64
	stop := pr.every(5*time.Second, func() string {
		w, _ := written()
		return fmt.Sprintf("%d of %d events published, %.0f written", published.Load(), n, w)
	})
	defer stop()

	m := startMeasure()
	brokerCPU := commandCPUSeconds(brokerProcess[driver])
	var wait time.Duration
	err = labelled(ctx, "role", "web", func(ctx context.Context) (err error) {
		wait, err = publishAll(ctx, web, templates, n, &published)
		return err
	})
	if err != nil {
		return t, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := web.Close(cctx); err != nil {
		return t, fmt.Errorf("close the web node: %w", err)
	}
	if err := waitFor(ctx, 10*time.Minute, func() (bool, error) {
		w, err := written()
		return w >= float64(n), err
	}); err != nil {
		w, _ := written()
		return t, fmt.Errorf("%.0f of %d events written: %w", w, n, err)
	}
	t = busCost(m.done(), n)
	if driver != BusMemory {
		t.BrokerCPUSeconds = commandCPUSeconds(brokerProcess[driver]) - brokerCPU
	}
	t.PublishWaitSeconds = wait.Seconds()

	// Where the time went, from the pipelines' own histograms.
	if driver != BusMemory {
		wm, err := pipelineMetrics(web)
		if err != nil {
			return t, err
		}
		t.BrokerMessages = int(wm.byName["sluice_sink_write_seconds_count"])
		t.ForwardSeconds = wm.byName["sluice_sink_write_seconds_sum"]
	}
	for _, w := range writers {
		wm, err := pipelineMetrics(w)
		if err != nil {
			return t, err
		}
		t.DBWrites += int(wm.byName["sluice_sink_write_seconds_count"])
		t.SinkWriteSeconds += wm.byName["sluice_sink_write_seconds_sum"]
	}
	stored, err := waitForRows(ctx, dsn, n)
	if err != nil {
		return t, err
	}
	t.StoredEvents = stored
	return t, nil
}

// busTemplates is how many generated events the bus scenario's publishers make their events from.
//
// A web node builds each event as its request ends, and the event is garbage once its chunk is
// forwarded: its heap stays small and steady. The scenario once generated all its 200,000 events
// up front instead (about 380 MB of heap, shrinking as Publish made each event lean): the heap of
// sluice's run grew and shrank by hundreds of MB, which the stock design's 10,000 events never
// did, and a page fault on this project's reference machine costs 11 µs (a first touch of 1 GiB
// takes 2.9 s), so sluice's Go CPU was charged 80,000-105,000 faults per run, 4-6 µs an event
// that no web node pays. The publishers now make each event as a request handler does, a new
// event with its own id, request id and trace id, from one of a few thousand generated ones
// (its nested request, response and attributes shared, which Publish only reads).
const busTemplates = 4096

// publishAll publishes n events from busPublishers goroutines, each its share in a tight loop, each
// event made from one of templates (see busTemplates). On a full bus a publisher waits briefly and
// offers the same event again, so that every event is accepted: it returns the time the publishers
// spent so waiting, summed.
func publishAll(ctx context.Context, p *sluice.Pipeline, templates []*event.Event, n int, published *atomic.Int64) (time.Duration, error) {
	var (
		wg      sync.WaitGroup
		waited  atomic.Int64
		errOnce sync.Once
		first   error
	)
	for g := range busPublishers {
		wg.Go(func() {
			for i := g; i < n; i += busPublishers {
				e := fromTemplate(templates[i%len(templates)])
				for {
					err := p.Publish(ctx, e)
					if err == nil {
						break
					}
					var drop *sluice.DropError
					if !errors.As(err, &drop) || drop.Reason() != bus.ReasonQueueFull || ctx.Err() != nil {
						errOnce.Do(func() { first = fmt.Errorf("publish event %d: %w", i, errors.Join(err, ctx.Err())) })
						return
					}
					start := time.Now()
					time.Sleep(200 * time.Microsecond)
					waited.Add(int64(time.Since(start)))
				}
				published.Add(1)
			}
		})
	}
	wg.Wait()
	return time.Duration(waited.Load()), first
}

// fromTemplate returns a new event like t, with an id, a request id and a trace id of its own (where
// t has them), sharing t's nested parts.
func fromTemplate(t *event.Event) *event.Event {
	e := new(event.Event)
	*e = *t
	e.ID = event.NewID()
	if e.RequestID != "" {
		e.RequestID = e.ID.String()
	}
	if e.TraceID != "" {
		e.TraceID = hex.EncodeToString(e.ID[:])
	}
	return e
}

// pipelineMetrics reads a pipeline's own Prometheus metrics.
func pipelineMetrics(p *sluice.Pipeline) (metrics, error) {
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return parseMetrics(rec.Body)
}

// pollEvery is how often the scenario looks whether the writers are done: often enough that the end
// of a run of seconds is known within 1-2%, seldom enough that reading three pipelines' metrics costs
// a few percent of the CPU the run measures (every 10 ms it was 12% of sluice's, through Redis).
const pollEvery = 50 * time.Millisecond

// waitFor polls done every pollEvery until it says true, fails, or limit passes.
func waitFor(ctx context.Context, limit time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// waitForRows polls count(*) of application_logs until it holds want rows (a sink may report a write
// an instant before another connection sees it), and fails when it holds more, or fewer after a
// minute.
func waitForRows(ctx context.Context, dsn string, want int) (int, error) {
	pool, err := openPool(ctx, dsn, 1, false)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	var rows int
	err = waitFor(ctx, time.Minute, func() (bool, error) {
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM application_logs").Scan(&rows); err != nil {
			return false, err
		}
		if rows > want {
			return false, fmt.Errorf("application_logs holds %d rows, want %d", rows, want)
		}
		return rows == want, nil
	})
	if err != nil {
		return rows, fmt.Errorf("application_logs holds %d rows, want %d: %w", rows, want, err)
	}
	return rows, nil
}

func busCost(c cost, n int) BusThroughput {
	return BusThroughput{Events: n, Seconds: c.seconds, EventsPerSecond: div(float64(n), c.seconds),
		ClientCPUSeconds: c.clientCPU, PostgresCPUSeconds: c.postgresCPU}
}

// busStock is Watermill's stock design on the same broker, with Watermill's own adapter for it (see
// stockAdapters): each event published as a message of its own (from busPublishers goroutines), and
// per worker a stock message.Router whose handler INSERTs one message's event and returns. Timed from
// the first publish until the last row is committed.
func busStock(ctx context.Context, cfg Config, n int, driver, url string, pr *progress) (BusThroughput, error) {
	var t BusThroughput
	open, ok := stockAdapters[driver]
	if !ok {
		return t, fmt.Errorf("no stock Watermill adapter for the %s broker", driver)
	}
	dsn, drop, err := freshDatabase(ctx, cfg.PostgresDSN)
	if err != nil {
		return t, err
	}
	defer drop()
	pool, err := openPool(ctx, dsn, poolConns, true)
	if err != nil {
		return t, err
	}
	defer pool.Close()
	topic, group := uniqueName("sluice_bench_"), uniqueName("sluice_bench_")
	defer func() { // after the set's Close
		if err := removeStock(context.WithoutCancel(ctx), driver, url, topic); err != nil {
			pr.say("bus: %s: could not remove the stock design's topic %s: %v", driver, topic, err)
		}
	}()
	logger := watermill.NewSlogLogger(slog.New(slog.DiscardHandler))
	set, err := open(ctx, url, topic, group, logger)
	if err != nil {
		return t, fmt.Errorf("open the stock adapter: %w", err)
	}
	defer set.close()
	events := busEvents(n)
	payloads := make([][]byte, n)
	for i, e := range events {
		if payloads[i], err = e.AppendJSON(nil); err != nil {
			return t, err
		}
	}

	var stored atomic.Int64
	all := make(chan struct{})
	handler := func(msg *message.Message) error {
		evs, bad := event.DecodeLean(msg.Payload) // sluice's decoder: the comparison is of the designs
		if len(bad) > 0 || len(evs) != 1 {
			return fmt.Errorf("message %s: %d events, %d bad lines", msg.UUID, len(evs), len(bad))
		}
		r, err := row(evs[0])
		if err != nil {
			return err
		}
		tag, err := pool.Exec(msg.Context(), insertOneIdempotent, r...)
		if err != nil {
			return err // nacked: the broker offers it again
		}
		if tag.RowsAffected() == 1 && stored.Add(1) == int64(n) {
			close(all)
		}
		return nil
	}
	for w := range cfg.BusWorkers {
		sub, err := set.subscriber(w)
		if err != nil {
			return t, fmt.Errorf("worker %d: %w", w, err)
		}
		defer sub.Close()
		router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
		if err != nil {
			return t, err
		}
		router.AddConsumerHandler("insert", topic, sub, handler)
		go func() { _ = router.Run(ctx) }()
		defer router.Close()
		select {
		case <-router.Running():
		case <-time.After(time.Minute):
			return t, fmt.Errorf("worker %d's router did not start within a minute", w)
		}
	}

	stop := pr.every(5*time.Second, func() string { return fmt.Sprintf("%d of %d stored", stored.Load(), n) })
	defer stop()
	m := startMeasure()
	brokerCPU := commandCPUSeconds(brokerProcess[driver])
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		pubErr  error
	)
	for g := range busPublishers {
		wg.Go(func() {
			for i := g; i < n; i += busPublishers {
				msg := message.NewMessage(events[i].ID.String(), payloads[i])
				if err := set.publisher.Publish(topic, msg); err != nil {
					errOnce.Do(func() { pubErr = fmt.Errorf("publish event %d: %w", i, err) })
					return
				}
			}
		})
	}
	wg.Wait()
	if pubErr != nil {
		return t, pubErr
	}
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return t, fmt.Errorf("%d of %d events stored after 10 minutes", stored.Load(), n)
	case <-ctx.Done():
		return t, ctx.Err()
	}
	t = busCost(m.done(), n)
	t.BrokerCPUSeconds = commandCPUSeconds(brokerProcess[driver]) - brokerCPU
	t.BrokerMessages, t.DBWrites = n, n
	t.StoredEvents, err = waitForRows(ctx, dsn, n)
	return t, err
}

// insertOneIdempotent is insertOne that stores a redelivered message's event once.
var insertOneIdempotent = insertOne + " ON CONFLICT DO NOTHING"
