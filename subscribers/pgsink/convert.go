package pgsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Migration 0003 makes application_logs range-partitioned by day on ts. SQL in one transaction cannot
// do it without locking a live table for as long as it takes to copy or scan its rows, so it is Go:
//
//  1. Prepare, while writes go on: build the indexes that the partitioned table's keys and queries
//     need on the existing table (CREATE INDEX CONCURRENTLY: (id, ts) unique, trace_id, (status,
//     ts)), and add and validate a CHECK (ts < cut) constraint (NOT VALID, then VALIDATE CONSTRAINT,
//     which scans under SHARE UPDATE EXCLUSIVE: writes go on), cut being the start of the UTC day
//     after tomorrow.
//  2. Swap, in one short transaction holding ACCESS EXCLUSIVE on the old table: rename it
//     application_logs_legacy (and its indexes), make (id, ts) its primary key with the index built
//     in 1, create the partitioned application_logs, and attach the old table as its partition FOR
//     VALUES FROM (MINVALUE) TO (cut). The validated constraint spares the attach its scan and the
//     prebuilt indexes spare it every index build: the transaction touches the catalog only, its
//     time does not grow with the rows (see the README, "Retention").
//
// Every row stays where it was. The day partitions start at cut; the legacy partition is dropped as a
// whole by retention once cut is past it. An empty table (a new database) is simply replaced.
//
// While the constraint of 1 exists, an event more than a day in the future (a clock skewed by days)
// that an older sluice writes into the old table fails the check and is dead-lettered, not lost. A
// failed or interrupted prepare leaves at worst that constraint and some indexes: the migration drops
// the constraint when it fails, and a second run drops invalid indexes and starts again.

const legacySuffix = "_legacy"

// The parent table of migration 0003: the columns of 0001, the primary key (id, ts) (a partitioned
// table's unique keys must hold the partition key; an event's ts never changes, so (id, ts) is as
// unique as id), and the indexes of the reading queries (sluice logs). Index names are stable: they
// are documented in the README.
const createPartitioned = `CREATE TABLE application_logs (
    id          uuid NOT NULL,
    ts          timestamptz NOT NULL,
    level       text NOT NULL CONSTRAINT application_logs_level_check CHECK (level IN ('DEBUG', 'INFO', 'WARN', 'ERROR')),
    kind        text NOT NULL CONSTRAINT application_logs_kind_check CHECK (kind IN ('http', 'app')),
    message     text NOT NULL,
    service     text,
    request_id  text,
    trace_id    text,
    span_id     text,
    method      text,
    route       text,
    path        text,
    status      int,
    duration_ms double precision,
    client_ip   text,
    user_agent  text,
    bytes_in    bigint,
    bytes_out   bigint,
    error       text,
    source      text,
    request     jsonb,
    response    jsonb,
    attrs       jsonb,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT application_logs_pkey PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX application_logs_ts_idx ON application_logs (ts);
CREATE INDEX application_logs_request_id_idx ON application_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX application_logs_trace_id_idx ON application_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX application_logs_level_ts_idx ON application_logs (level, ts);
CREATE INDEX application_logs_status_ts_idx ON application_logs (status, ts) WHERE status IS NOT NULL;
COMMENT ON TABLE application_logs IS 'one row per event, range-partitioned by day on ts (application_logs_pYYYYMMDD); retention drops whole partitions'`

// prebuilt are the indexes step 1 builds on the old table, by name: the ones of the parent that 0001
// did not have, named as they are once the table is application_logs_legacy.
var prebuilt = []struct{ name, def string }{
	{"application_logs_legacy_id_ts_key", "UNIQUE INDEX CONCURRENTLY application_logs_legacy_id_ts_key ON application_logs (id, ts)"},
	{"application_logs_legacy_trace_id_idx", "INDEX CONCURRENTLY application_logs_legacy_trace_id_idx ON application_logs (trace_id) WHERE trace_id IS NOT NULL"},
	{"application_logs_legacy_status_ts_idx", "INDEX CONCURRENTLY application_logs_legacy_status_ts_idx ON application_logs (status, ts) WHERE status IS NOT NULL"},
}

// convertStats says how long each step of the conversion took.
type convertStats struct {
	Prepare time.Duration // step 1: writes go on
	Locked  time.Duration // step 2: the transaction that holds ACCESS EXCLUSIVE on the table
	Empty   bool          // the table was empty and simply replaced
}

// partitionByDay is migration 0003 (see above). It is idempotent: on a partitioned table it does
// nothing.
func partitionByDay(ctx context.Context, conn *pgx.Conn) error {
	_, err := convertToPartitions(ctx, conn, time.Now())
	return err
}

func convertToPartitions(ctx context.Context, conn *pgx.Conn, now time.Time) (st convertStats, err error) {
	var kind string
	if err := conn.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('application_logs')").Scan(&kind); err != nil {
		return st, fmt.Errorf("find application_logs: %w", err)
	}
	if kind == "p" {
		return st, nil
	}
	var empty bool
	if err := conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM application_logs)").Scan(&empty); err != nil {
		return st, err
	}
	st, err = convert(ctx, conn, now, empty)
	if errors.Is(err, errRowsArrived) {
		st, err = convert(ctx, conn, now, false)
	}
	return st, err
}

// errRowsArrived: the table was empty when the migration looked, and had rows when it locked it.
var errRowsArrived = errors.New("rows arrived while the migration ran")

// convert runs steps 1 (unless the table was empty) and 2.
func convert(ctx context.Context, conn *pgx.Conn, now time.Time, empty bool) (st convertStats, err error) {
	// The legacy partition ends after tomorrow, and after the newest row the table holds.
	cut := day(now).AddDate(0, 0, 2)
	var newest *time.Time
	if err := conn.QueryRow(ctx, "SELECT max(ts) FROM application_logs").Scan(&newest); err != nil {
		return st, err
	}
	if newest != nil && !day(*newest).Before(cut) {
		cut = day(*newest).AddDate(0, 0, 1)
	}
	if !empty {
		defer func() {
			if err != nil { // an older sluice must not meet the constraint of a conversion that did not happen
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				_, _ = conn.Exec(cctx, "ALTER TABLE IF EXISTS application_logs DROP CONSTRAINT IF EXISTS application_logs_legacy_range")
			}
		}()
		start := time.Now()
		if err := prepareConversion(ctx, conn, cut); err != nil {
			return st, err
		}
		st.Prepare = time.Since(start)
	}
	start := time.Now()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '30s'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE application_logs IN ACCESS EXCLUSIVE MODE"); err != nil {
			return fmt.Errorf("lock application_logs: %w", err)
		}
		if err := tx.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM application_logs)").Scan(&st.Empty); err != nil {
			return err
		}
		var stmts []string
		if st.Empty {
			stmts = []string{"DROP TABLE application_logs", createPartitioned}
		} else {
			if empty {
				return errRowsArrived
			}
			stmts = []string{
				"ALTER TABLE application_logs RENAME TO application_logs" + legacySuffix,
				"ALTER INDEX application_logs_ts_idx RENAME TO application_logs_legacy_ts_idx",
				"ALTER INDEX application_logs_request_id_idx RENAME TO application_logs_legacy_request_id_idx",
				"ALTER INDEX application_logs_level_ts_idx RENAME TO application_logs_legacy_level_ts_idx",
				"ALTER TABLE application_logs_legacy DROP CONSTRAINT application_logs_pkey",
				"ALTER TABLE application_logs_legacy ADD CONSTRAINT application_logs_legacy_pkey PRIMARY KEY USING INDEX application_logs_legacy_id_ts_key",
				createPartitioned,
				"ALTER TABLE application_logs ATTACH PARTITION application_logs_legacy FOR VALUES FROM (MINVALUE) TO ('" +
					cut.Format(time.RFC3339) + "')",
				"COMMENT ON TABLE application_logs_legacy IS 'the rows of application_logs before it was partitioned (migration 0003); dropped whole by retention'",
			}
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%.60s…: %w", s, err)
			}
		}
		return nil
	})
	st.Locked = time.Since(start)
	if errors.Is(err, errRowsArrived) {
		return st, err
	}
	if err != nil {
		return st, fmt.Errorf("swap in the partitioned application_logs: %w", err)
	}
	// The day partitions from today on: in their own transactions, each briefly.
	return st, newPartitions(conn, pgx.Identifier{DefaultTable}).Ensure(ctx, days(nil, now))
}

// prepareConversion is step 1: indexes built concurrently and the range constraint validated, while
// writes go on.
func prepareConversion(ctx context.Context, conn *pgx.Conn, cut time.Time) error {
	for _, ix := range prebuilt {
		// An index that a failed CREATE INDEX CONCURRENTLY left invalid is dropped and built again.
		valid, err := dropInvalid(ctx, conn, ix.name)
		if err != nil {
			return err
		}
		if valid {
			continue
		}
		if _, err := conn.Exec(ctx, "CREATE "+ix.def); err != nil {
			return fmt.Errorf("build index %s: %w", ix.name, err)
		}
	}
	for _, s := range []string{
		"SET lock_timeout = '30s'",
		"ALTER TABLE application_logs DROP CONSTRAINT IF EXISTS application_logs_legacy_range",
		"ALTER TABLE application_logs ADD CONSTRAINT application_logs_legacy_range CHECK (ts < '" + cut.Format(time.RFC3339) + "') NOT VALID",
		"RESET lock_timeout",
		"ALTER TABLE application_logs VALIDATE CONSTRAINT application_logs_legacy_range",
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}
