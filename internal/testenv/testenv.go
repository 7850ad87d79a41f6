// Package testenv gives tests the real services they run against: a fresh PostgreSQL database per call,
// the Azurite blob endpoint that .ci/run starts, and a Kafka-protocol broker per call (franz-go's
// kfake, built from internal/kfake and run as a process of its own that a test can kill -9 and start
// again: Kafka). It never fakes a service: when one is missing the
// test fails and says how to provide it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// DefaultPostgresDSN is the server tests use unless SLUICE_TEST_POSTGRES_DSN says otherwise.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AzuriteEnv names the variable that holds the connection string of the Azurite that .ci/run starts.
const AzuriteEnv = "SLUICE_TEST_AZURITE"

// Postgres creates a new, empty database for the test and returns its DSN. The database is dropped when
// the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("SLUICE_TEST_POSTGRES_DSN")
	if admin == "" {
		admin = DefaultPostgresDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL at %s is not reachable (start it with .ci/run or pg_ctlcluster): %v", admin, err)
	}
	defer conn.Close(ctx)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "sluice_test_" + hex.EncodeToString(rnd[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", admin, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Azurite returns the connection string of the running Azurite blob service. It fails the test when
// none is configured: run the tests through .ci/run, or start Azurite with scripts/azurite.sh and export
// what it prints.
func Azurite(t testing.TB) string {
	t.Helper()
	cs := strings.TrimSpace(os.Getenv(AzuriteEnv))
	if cs == "" {
		t.Fatalf("testenv: %s is not set; run the tests with .ci/run, or start Azurite with "+
			"`eval $(scripts/azurite.sh start)`", AzuriteEnv)
	}
	return cs
}

// Container returns a fresh, unique container name for a test.
func Container(t testing.TB) string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return "t" + hex.EncodeToString(rnd[:])
}

// MigratedPostgres returns a pool on a fresh database (Postgres) with sluice's schema applied. The pool
// is closed when the test ends.
func MigratedPostgres(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, Postgres(t))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatalf("testenv: migrate: %v", err)
	}
	return pool
}
