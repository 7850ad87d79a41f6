package pgsink

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The schema's migrations: migrations/NNNN_name.sql, and goMigrations for what SQL in one transaction
// cannot do, applied in order of NNNN.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the advisory lock key that serializes migrations across processes ("sluice" in
// ASCII).
const migrationLockKey int64 = 0x736c75696365

const createVersionTable = `CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
	version    int PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migration is one schema migration and whether the database has it.
type Migration struct {
	Version   int
	Name      string    // the file name, e.g. "0001_application_logs.sql"
	AppliedAt time.Time // zero when not applied
}

// Applied says whether the database has the migration.
func (m Migration) Applied() bool { return !m.AppliedAt.IsZero() }

type migration struct {
	Migration
	sql string
	// run, when set, is a migration in Go: it runs on the migrating session's connection, outside any
	// transaction (it may build indexes concurrently), and must be idempotent (it is recorded after it
	// returns, and runs again if the record was lost).
	run func(ctx context.Context, conn *pgx.Conn) error
}

// goMigrations are the migrations that SQL in one transaction cannot do.
var goMigrations = []migration{
	{Migration: Migration{Version: 3, Name: "0003_partition_by_day (Go)"}, run: partitionByDay},
	{Migration: Migration{Version: 4, Name: "0004_hash_id_indexes (Go)"}, run: hashIDIndexes},
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, p := range names {
		name := path.Base(p)
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql with NNNN > 0", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, name, v)
		}
		seen[v] = name
		b, err := migrationFiles.ReadFile(p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{Migration: Migration{Version: v, Name: name}, sql: string(b)})
	}
	for _, m := range goMigrations {
		if other, dup := seen[m.Version]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, m.Name, m.Version)
		}
		seen[m.Version] = m.Name
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// Migrate brings the database's schema up to date and returns the names of the migrations it applied
// (none when the schema was current). It holds a session-level advisory lock on one connection
// while it works, so processes starting at the same time apply each migration once: the others wait,
// asking for the lock again every 100 ms rather than queueing on it (a queued lock request would hold
// a snapshot that CREATE INDEX CONCURRENTLY, in migration 0003, waits for), then find it applied. An
// SQL migration runs in its own transaction together with its record in sluice_schema_migrations, so
// a failed one leaves the database at the previous version; a Go migration is idempotent.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied []string, err error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgsink: migrate: %w", err)
	}
	defer conn.Release()
	unlock, err := lockSession(ctx, conn.Conn(), migrationLockKey)
	if err != nil {
		return nil, fmt.Errorf("pgsink: migrate: lock migrations: %w", err)
	}
	defer unlock()
	if _, err := conn.Exec(ctx, createVersionTable); err != nil {
		return nil, fmt.Errorf("pgsink: migrate: create sluice_schema_migrations: %w", err)
	}
	have, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("pgsink: migrate: %w", err)
	}
	for _, m := range ms {
		if _, ok := have[m.Version]; ok {
			continue
		}
		if err := apply(ctx, conn.Conn(), m); err != nil {
			return applied, fmt.Errorf("pgsink: migrate: %w", err)
		}
		applied = append(applied, m.Name)
	}
	return applied, nil
}

// apply applies one migration and records it.
func apply(ctx context.Context, conn *pgx.Conn, m migration) error {
	record := func(q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}) error {
		if _, err := q.Exec(ctx, "INSERT INTO sluice_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		return nil
	}
	if m.run != nil {
		if err := m.run(ctx, conn); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		return record(conn)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		return record(tx)
	})
}

// lockSession takes the session-level advisory lock key on conn, asking again every 100 ms until it
// gets it or ctx ends, and returns what releases it. When the release fails the connection is closed,
// which releases it too.
func lockSession(ctx context.Context, conn *pgx.Conn, key int64) (unlock func(), err error) {
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
			return nil, err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return func() { advisoryUnlock(ctx, conn, key) }, nil
}

// advisoryUnlock releases the session-level advisory lock key held by conn's session, or closes conn
// when it cannot (ending the session releases it).
func advisoryUnlock(ctx context.Context, conn *pgx.Conn, key int64) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(cctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
		_ = conn.Close(cctx)
	}
}

func appliedVersions(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[int]time.Time, error) {
	rows, err := q.Query(ctx, "SELECT version, applied_at FROM sluice_schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read sluice_schema_migrations: %w", err)
	}
	have := map[int]time.Time{}
	var (
		v  int
		at time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&v, &at}, func() error {
		have[v] = at
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read sluice_schema_migrations: %w", err)
	}
	return have, nil
}

// MigrationStatus lists the migrations this build knows, in order, each with the time the database
// applied it (zero when it has not). A database that was never migrated has none applied.
func MigrationStatus(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	have, err := appliedVersions(ctx, pool)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: never migrated
		have, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgsink: migration status: %w", err)
	}
	out := make([]Migration, len(ms))
	for i, m := range ms {
		out[i] = m.Migration
		out[i].AppliedAt = have[m.Version]
	}
	return out, nil
}
