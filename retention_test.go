package sluice

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// gauge returns the value of a gauge or counter series with the label given, or -1 when it has none.
func gauge(t *testing.T, p *Pipeline, name, label, value string) float64 {
	t.Helper()
	families, err := p.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetGauge() != nil {
						return m.GetGauge().GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// retentionStores returns a configuration on a fresh database and directory whose stores hold
// events of 40 days ago and of today, written through the sinks, with a retention of 30 days on both.
func retentionStores(t *testing.T) (Config, *pgxpool.Pool, *blobsink.DirStore) {
	t.Helper()
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Postgres.DSN, cfg.Blob.Dir = testenv.Postgres(t), t.TempDir()
	cfg.Blob.Retention = 720 * time.Hour
	pool, err := pgxpool.New(ctx, cfg.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pg, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := blobsink.NewDirStore(filepath.Join(cfg.Blob.Dir, cfg.Blob.Container))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := blobsink.New(store, blobsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b := subscribers.NewBatch(append(sinktest.Events(5, time.Now().AddDate(0, 0, -40)), sinktest.Events(5, time.Now())...))
	for _, s := range []subscribers.Sink{pg, blob} {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, pool, store
}

// The running pipeline prunes its stores to their retention once at start, and its metrics say what,
// when, and the oldest data kept, per sink.
func TestPipelinePrunesAtStart(t *testing.T) {
	cfg, pool, store := retentionStores(t)
	ctx := context.Background()
	p, err := New(ctx, cfg, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for gauge(t, p, "sluice_retention_last_run_timestamp_seconds", "sink", "postgres") <= 0 ||
		gauge(t, p, "sluice_retention_last_run_timestamp_seconds", "sink", "blob") <= 0 {
		if time.Now().After(deadline) {
			t.Fatal("no prune within 60 s of the start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM application_logs").Scan(&rows); err != nil || rows != 5 {
		t.Errorf("%d rows left (%v), want today's 5", rows, err)
	}
	if names, err := store.List(ctx, ""); err != nil || len(names) != 1 {
		t.Errorf("blobs left %v (%v), want today's one", names, err)
	}
	for _, sink := range []string{"postgres", "blob"} {
		if n := gauge(t, p, "sluice_retention_pruned_units_total", "sink", sink); n != 1 {
			t.Errorf("%s: %v units pruned, want 1", sink, n)
		}
		oldest := gauge(t, p, "sluice_retention_oldest_timestamp_seconds", "sink", sink)
		if age := time.Since(time.Unix(int64(oldest), 0)); age < 0 || age > 25*time.Hour {
			t.Errorf("%s: the oldest data kept is %s old, want today's", sink, age)
		}
	}
	if n := gauge(t, p, "sluice_retention_pruned_events_total", "sink", "postgres"); n != 5 {
		t.Errorf("%v events pruned from PostgreSQL, want 5", n)
	}
}

// One process at a time prunes: while another holds the lock, Prune says so and removes nothing; a
// dry run needs no lock.
func TestPruneWaitsItsTurn(t *testing.T) {
	cfg, pool, _ := retentionStores(t)
	ctx := context.Background()
	other, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	unlock, ok, err := other.TryPruneLock(ctx)
	if err != nil || !ok {
		t.Fatalf("TryPruneLock = %v, %v", ok, err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := Prune(ctx, cfg, PruneOptions{}, log); !errors.Is(err, ErrPruneLocked) {
		t.Errorf("Prune while locked = %v, want ErrPruneLocked", err)
	}
	reports, err := Prune(ctx, cfg, PruneOptions{DryRun: true, Sinks: []string{"postgres"}}, log)
	if err != nil || len(reports) != 1 || len(reports[0].Removed) != 1 {
		t.Errorf("dry run while locked = %+v, %v; want the old partition listed", reports, err)
	}
	unlock()
	reports, err = Prune(ctx, cfg, PruneOptions{}, log)
	if err != nil || len(reports) != 2 {
		t.Fatalf("Prune = %+v, %v", reports, err)
	}
	if _, err := Prune(ctx, cfg, PruneOptions{Sinks: []string{"console"}}, log); err == nil {
		t.Error("Prune of a sink no route writes to: no error")
	}
}
