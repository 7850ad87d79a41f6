package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// environ is the environment the configuration reads (a test replaces it).
var environ = os.Environ

// migrate applies the schema migrations and prints every migration's status.
func migrate(ctx context.Context, file string, stdout io.Writer) error {
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, cfg.Postgres.DSN)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := pgsink.Migrate(ctx, pool)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", cfg.Redacted().Postgres.DSN, err)
	}
	status, err := pgsink.MigrationStatus(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied now: %d\n", len(applied))
	for _, m := range status {
		when := "pending"
		if m.Applied() {
			when = "applied " + m.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%04d %-30s %s\n", m.Version, m.Name, when)
	}
	return nil
}

// printConfig prints the effective configuration and the variable of every key.
func printConfig(file string, stdout io.Writer) error {
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, effective(cfg))
	fmt.Fprintln(stdout, "\n# environment variables:")
	for _, kv := range cfg.Values() {
		fmt.Fprintf(stdout, "#   %-40s %s\n", kv.Env, kv.Key)
	}
	return nil
}
