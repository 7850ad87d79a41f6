package pgsink_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// migratedPool returns a pool on a fresh database that has the schema. It is closed when the test ends.
func migratedPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := newPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return pool
}

// newPool returns a pool on a fresh, empty database. It is closed when the test ends.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := testenv.Postgres(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
