package pgsink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers"
)

func init() {
	subscribers.RegisterSinkType(subscribers.SinkType{Name: SinkType, Open: open})
}

// opened is the postgres sink type opened for one pipeline: one pool and one sink for every route to
// PostgreSQL, and the schema made sure of before the first write.
type opened struct {
	settings Settings
	pool     *pgxpool.Pool
	sink     *schemaSink
	status   atomic.Value // string: "" when PostgreSQL answered last
}

// open makes the pool (it connects lazily) and tries PostgreSQL once, briefly, so that the start-up
// log says whether it is there; a PostgreSQL that is down does not stop the pipeline: its routes'
// events wait in the bus and are written when it is back.
func open(ctx context.Context, section any, log *slog.Logger) (subscribers.Opened, error) {
	s, ok := section.(Settings)
	if !ok {
		return nil, fmt.Errorf("pgsink: the %s section is a %T, not pgsink.Settings", SinkType, section)
	}
	pcfg, err := pgxpool.ParseConfig(s.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres.dsn: %w", err)
	}
	pcfg.MaxConns = int32(s.MaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	sink, err := New(pool, Config{WriteTimeout: s.WriteTimeout})
	if err != nil {
		pool.Close()
		return nil, err
	}
	o := &opened{settings: s, pool: pool}
	o.status.Store("")
	o.sink = &schemaSink{Sink: sink, o: o, log: log}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := o.sink.ensure(tctx); err != nil {
		log.Warn("PostgreSQL is not reachable: warnings and errors wait in the bus (up to its bound) "+
			"and are written when it is back; the other routes go on",
			"dsn", MaskDSN(s.DSN), "error", err)
	}
	return o, nil
}

func (o *opened) Sink(subscribers.Route) (subscribers.Sink, error) { return o.sink, nil }
func (o *opened) WriteTimeout() time.Duration                      { return o.settings.WriteTimeout }
func (o *opened) Status() string                                   { return o.status.Load().(string) }

func (o *opened) Where(subscribers.Route) string {
	return fmt.Sprintf("PostgreSQL %s, table %s", MaskDSN(o.settings.DSN), DefaultTable)
}

// Retention implements subscribers.Pruner: postgres.retention.
func (o *opened) Retention() time.Duration { return o.settings.Retention }

// Prune implements subscribers.Pruner (Sink.Prune), once the schema is there.
func (o *opened) Prune(ctx context.Context, cutoff time.Time, dryRun bool) (subscribers.PruneReport, error) {
	if err := o.sink.ensure(ctx); err != nil {
		return subscribers.PruneReport{Sink: SinkType, Cutoff: cutoff, DryRun: dryRun}, err
	}
	return o.sink.Prune(ctx, cutoff, dryRun)
}

// TryPruneLock implements subscribers.PruneLocker: a PostgreSQL advisory lock.
func (o *opened) TryPruneLock(ctx context.Context) (func(), bool, error) {
	return o.sink.TryPruneLock(ctx)
}

var (
	_ subscribers.Pruner      = (*opened)(nil)
	_ subscribers.PruneLocker = (*opened)(nil)
)

// Close closes the sink, then the pool.
func (o *opened) Close() error {
	err := o.sink.Close()
	o.pool.Close()
	return err
}

// schemaSink makes sure the schema is migrated (when configured) before the first write, so that a
// PostgreSQL that was down at start is set up when it comes back.
type schemaSink struct {
	*Sink
	o     *opened
	log   *slog.Logger
	mu    sync.Mutex
	ready bool
}

func (s *schemaSink) ensure(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready {
		return nil
	}
	var err error
	if s.o.settings.Migrate {
		var applied []string
		if applied, err = Migrate(ctx, s.o.pool); err == nil && len(applied) > 0 {
			s.log.Info("PostgreSQL schema migrated", "applied", applied)
		}
	} else {
		err = s.o.pool.Ping(ctx)
	}
	if err != nil {
		s.o.status.Store(err.Error())
		return err
	}
	s.ready = true
	s.o.status.Store("")
	return nil
}

func (s *schemaSink) Write(ctx context.Context, b subscribers.Batch) error {
	if err := s.ensure(ctx); err != nil {
		return err
	}
	return s.Sink.Write(ctx, b)
}
