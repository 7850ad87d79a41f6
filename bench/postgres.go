package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
)

// copyRows is the number of rows per COPY of the raw ceiling.
const copyRows = 1000

// poolConns is the connections of the per-event designs' pools: sluice's default postgres.max_conns.
const poolConns = 4

// runPostgres writes the same generated events into PostgreSQL with each design, each into a fresh
// database, and checks that each stored every event once.
func runPostgres(ctx context.Context, cfg Config, pl plan, pr *progress) (*PostgresResults, error) {
	res := &PostgresResults{}
	var jsonBytes, n int
	for _, e := range generate(min(pl.pgEvents, 1000)) {
		b, err := e.AppendJSON(nil)
		if err != nil {
			return nil, err
		}
		jsonBytes, n = jsonBytes+len(b), n+1
	}
	res.EventJSONBytes = float64(jsonBytes) / float64(n)
	for _, d := range []struct {
		name   string
		events int
		out    *PGThroughput
		run    func(context.Context, string, []*event.Event, *progress) (PGThroughput, error)
	}{
		{"sluice", pl.pgEvents, &res.Sluice, pgSluice},
		{"raw CopyFrom", pl.pgEvents, &res.RawCopyFrom, pgCopyFrom},
		{"per-event INSERT", pl.insertEvents, &res.PerEventInsert, pgPerEventInsert(poolConns)},
		{"per-event INSERT, one connection", pl.insertEvents, &res.PerEventInsertOneConn, pgPerEventInsert(1)},
		{"Watermill SQL publisher", pl.watermillEvents, &res.WatermillSQL, pgWatermill},
	} {
		pr.say("postgres: %s, %d events", d.name, d.events)
		t, err := pgDesign(ctx, cfg.PostgresDSN, d.events, pr, d.run)
		if err != nil {
			return res, fmt.Errorf("%s: %w", d.name, err)
		}
		*d.out = t
		pr.say("postgres: %s: %.0f events/s, %.0f writes/s, %.0f stored bytes/event",
			d.name, t.EventsPerSecond, t.DBWritesPerSecond, t.StoredBytesPerEvent)
	}
	return res, nil
}

// pgDesign runs one design on a fresh database with n fresh events.
func pgDesign(ctx context.Context, adminDSN string, n int, pr *progress,
	run func(context.Context, string, []*event.Event, *progress) (PGThroughput, error)) (PGThroughput, error) {
	dsn, drop, err := freshDatabase(ctx, adminDSN)
	if err != nil {
		return PGThroughput{}, err
	}
	defer drop()
	t, err := run(ctx, dsn, generate(n), pr)
	if err != nil {
		return t, err
	}
	t.Events = n
	t.EventsPerSecond = div(float64(n), t.Seconds)
	t.DBWritesPerSecond = div(float64(t.DBWrites), t.Seconds)
	return t, nil
}

func pgCost(c cost) PGThroughput {
	return PGThroughput{Seconds: c.seconds, ClientCPUSeconds: c.clientCPU, PostgresCPUSeconds: c.postgresCPU}
}

// pgCheck fails unless table holds want rows, and returns its stored bytes per row.
func pgCheck(ctx context.Context, dsn, table string, want int) (float64, error) {
	pool, err := openPool(ctx, dsn, 1, false)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	rows, bytes, err := tableStats(ctx, pool, table)
	if err != nil {
		return 0, err
	}
	if rows != want {
		return 0, fmt.Errorf("%s holds %d rows, want %d", table, rows, want)
	}
	return div(float64(bytes), float64(rows)), nil
}

// pgSluice is the pipeline with one route taking every event to PostgreSQL.
func pgSluice(ctx context.Context, dsn string, events []*event.Event, pr *progress) (PGThroughput, error) {
	cfg := routeConfig(config.SinkPostgres)
	cfg.Postgres.DSN = dsn
	run, err := runPipeline(ctx, cfg, events, pr)
	if err != nil {
		return PGThroughput{}, err
	}
	t := pgCost(run.cost)
	t.DBWrites = int(run.metrics.byName["sluice_sink_batch_events_count"])
	t.StoredBytesPerEvent, err = pgCheck(ctx, dsn, "application_logs", len(events))
	return t, err
}

// pgCopyFrom is the ceiling: rows built and copied, 1,000 per COPY, on one connection.
func pgCopyFrom(ctx context.Context, dsn string, events []*event.Event, _ *progress) (PGThroughput, error) {
	pool, err := openPool(ctx, dsn, 1, true)
	if err != nil {
		return PGThroughput{}, err
	}
	defer pool.Close()
	var t PGThroughput
	m := startMeasure()
	for from := 0; from < len(events); from += copyRows {
		batch := events[from:min(from+copyRows, len(events))]
		rows := make([][]any, len(batch))
		for i, e := range batch {
			if rows[i], err = row(e); err != nil {
				return t, err
			}
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, rowColumns, pgx.CopyFromRows(rows)); err != nil {
			return t, err
		}
	}
	t = pgCost(m.done())
	t.DBWrites = (len(events) + copyRows - 1) / copyRows
	t.StoredBytesPerEvent, err = pgCheck(ctx, dsn, "application_logs", len(events))
	return t, err
}

// pgPerEventInsert is the design sluice replaces: a goroutine per event, each running one
// autocommitted INSERT through a pool of conns connections.
func pgPerEventInsert(conns int32) func(context.Context, string, []*event.Event, *progress) (PGThroughput, error) {
	return func(ctx context.Context, dsn string, events []*event.Event, pr *progress) (PGThroughput, error) {
		pool, err := openPool(ctx, dsn, conns, true)
		if err != nil {
			return PGThroughput{}, err
		}
		defer pool.Close()
		c, err := eachEvent(events, 0, pr, "inserted", func(e *event.Event) error {
			r, err := row(e)
			if err == nil {
				_, err = pool.Exec(ctx, insertOne, r...)
			}
			return err
		})
		t := pgCost(c)
		t.DBWrites = len(events)
		if err != nil {
			return t, err
		}
		t.StoredBytesPerEvent, err = pgCheck(ctx, dsn, "application_logs", len(events))
		return t, err
	}
}

// eachEvent runs do for every event, each in a goroutine of its own, at most limit at once (0: no
// limit), and returns what they took and the first error.
func eachEvent(events []*event.Event, limit int, pr *progress, done string, do func(*event.Event) error) (cost, error) {
	var (
		wg       sync.WaitGroup
		sem      chan struct{}
		n        atomic.Int64
		firstErr atomic.Value
	)
	if limit > 0 {
		sem = make(chan struct{}, limit)
	}
	stop := pr.every(5*time.Second, func() string { return fmt.Sprintf("%d of %d %s", n.Load(), len(events), done) })
	defer stop()
	m := startMeasure()
	for _, e := range events {
		if sem != nil {
			sem <- struct{}{}
		}
		wg.Go(func() {
			if sem != nil {
				defer func() { <-sem }()
			}
			if err := do(e); err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			n.Add(1)
		})
	}
	wg.Wait()
	c := m.done()
	err, _ := firstErr.Load().(error)
	return c, err
}

// watermillTopic is the SQL publisher's topic; DefaultPostgreSQLSchema stores it in watermill_<topic>.
const watermillTopic = "sluice_events"

// pgWatermill is Watermill's stock parts: events published to a GoChannel, a router handler that
// publishes each message with the SQL publisher (one INSERT per message) through a pool of poolConns
// connections. The time runs from the first publish until the handler has stored the last message.
func pgWatermill(ctx context.Context, dsn string, events []*event.Event, pr *progress) (PGThroughput, error) {
	var t PGThroughput
	pool, err := openPool(ctx, dsn, poolConns, false)
	if err != nil {
		return t, err
	}
	defer pool.Close()
	logger := watermill.NewSlogLogger(slog.New(slog.DiscardHandler))
	sqlPub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{
		SchemaAdapter: wsql.DefaultPostgreSQLSchema{}, AutoInitializeSchema: true,
	}, logger)
	if err != nil {
		return t, err
	}
	defer sqlPub.Close()
	// The publisher creates its table at its first publish: do it before the timer.
	payloads := make([][]byte, len(events))
	for i, e := range events {
		if payloads[i], err = e.AppendJSON(nil); err != nil {
			return t, err
		}
	}
	if err := sqlPub.Publish(watermillTopic, message.NewMessage(watermill.NewUUID(), payloads[0])); err != nil {
		return t, err
	}

	goch := gochannel.NewGoChannel(gochannel.Config{}, logger)
	defer goch.Close()
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return t, err
	}
	var stored atomic.Int64
	all := make(chan struct{})
	router.AddConsumerHandler("to-sql", "events", goch, func(msg *message.Message) error {
		if err := sqlPub.Publish(watermillTopic, msg); err != nil {
			return err // nacked: GoChannel offers it again
		}
		if stored.Add(1) == int64(len(events)) {
			close(all)
		}
		return nil
	})
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	stop := pr.every(5*time.Second, func() string { return fmt.Sprintf("%d of %d stored", stored.Load(), len(events)) })
	defer stop()
	m := startMeasure()
	for i, e := range events {
		if err := goch.Publish("events", message.NewMessage(e.ID.String(), payloads[i])); err != nil {
			return t, err
		}
	}
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return t, fmt.Errorf("%d of %d messages stored after 10 minutes", stored.Load(), len(events))
	case <-ctx.Done():
		return t, ctx.Err()
	}
	t = pgCost(m.done())
	t.DBWrites = len(events)
	t.StoredBytesPerEvent, err = pgCheck(ctx, dsn, "watermill_"+watermillTopic, len(events)+1) // +1: the first
	return t, err
}
