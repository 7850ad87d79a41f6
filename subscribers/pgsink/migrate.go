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

// The schema's migrations: migrations/NNNN_name.sql, applied in order of NNNN.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_xact_lock key that serializes migrations across processes
// ("sluice" in ASCII).
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
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// Migrate brings the database's schema up to date and returns the names of the migrations it applied
// (none when the schema was current). Each migration runs in its own transaction together with its
// record in sluice_schema_migrations, under a transaction-level advisory lock, so processes starting
// at the same time apply each migration once: the others wait, then find it applied. A failed
// migration leaves the database at the previous version.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied []string, err error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	for {
		name, err := migrateNext(ctx, pool, ms)
		if err != nil {
			return applied, err
		}
		if name == "" {
			return applied, nil
		}
		applied = append(applied, name)
	}
}

// migrateNext applies the first migration the database does not have, in one transaction, and returns
// its name, or "" when there was none.
func migrateNext(ctx context.Context, pool *pgxpool.Pool, ms []migration) (string, error) {
	var name string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, createVersionTable); err != nil {
			return fmt.Errorf("create sluice_schema_migrations: %w", err)
		}
		have, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if _, ok := have[m.Version]; ok {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx,
				"INSERT INTO sluice_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
			name = m.Name
			return nil
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("pgsink: migrate: %w", err)
	}
	return name, nil
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
