// Package pgsink owns sluice's PostgreSQL store: the application_logs schema and its versioned
// migrations (Migrate), its day partitions (partition.go: made ahead and on demand) and their
// retention (Prune: whole partitions dropped), and the Sink that writes batches of events to it, one
// row per event.
//
// A write is one transaction, idempotent on the event id: writing a batch again, or an event that is
// already stored, leaves one row per event. What PostgreSQL refuses (NUL, invalid UTF-8, \u0000
// escapes, numbers numeric cannot hold) is made storable before it reaches the sink, by sluice's one
// rule (package event: the encoder writes storable JSON, Decode makes a line from elsewhere storable),
// and the sink stores those bytes as they are; its text columns pass through event.SafeString (an
// event built by hand may hold a NUL), so that one such event cannot fail its batch.
//
// Write's errors are classified (Classify): permanent (subscribers.Permanent) when the data is at fault,
// by SQLSTATE, so that the batcher splits the batch and dead-letters the bad events; transient
// otherwise. WriteDeadLetters keeps those events in application_logs_dead_letter.
//
// The package writes and migrates; it does not batch, retry, or decide which events to keep: that is
// the subscribers package's and the router's work. It must not import the publishers package nor the
// root sluice package.
package pgsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers"
)

// Defaults of Config.
const (
	DefaultTable           = "application_logs"
	DefaultDeadLetterTable = "application_logs_dead_letter"
	DefaultWriteTimeout    = 10 * time.Second
)

var (
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("pgsink: sink is closed")
	// ErrInvalidEvent marks an event that cannot be stored whatever the retries: it fails
	// event.Validate, its time is outside PostgreSQL's range, or it cannot be encoded. Write's error
	// wraps it, is permanent, and names the event; nothing of its batch is written.
	ErrInvalidEvent = subscribers.ErrInvalidEvent
)

// Config configures a Sink. Its zero value is valid: every field has a default.
type Config struct {
	// Table is the table written to, optionally schema-qualified ("logs.application_logs"). It must have
	// the columns of application_logs, of their types (text may be varchar: the first write checks,
	// and names a column that differs), and a unique key on (id, ts). When it is partitioned by range on
	// ts, the sink makes the day partitions it writes to (Partitions). Default "application_logs".
	Table string
	// DeadLetterTable is the table WriteDeadLetters writes, optionally schema-qualified. It must have the
	// columns of application_logs_dead_letter and its unique keys (migration 0002). Default
	// "application_logs_dead_letter".
	DeadLetterTable string
	// WriteTimeout bounds one Write, on top of the caller's context. Default 10s.
	WriteTimeout time.Duration
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.DeadLetterTable == "" {
		c.DeadLetterTable = DefaultDeadLetterTable
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Validate reports the first invalid field, naming its key and value. Empty fields are valid (they
// take their defaults).
func (c Config) Validate() error {
	if c.Table != "" && !tableName.MatchString(c.Table) {
		return fmt.Errorf("`table` (%q) must be a table name, optionally schema-qualified: letters, digits and _", c.Table)
	}
	if c.DeadLetterTable != "" && !tableName.MatchString(c.DeadLetterTable) {
		return fmt.Errorf("`dead_letter_table` (%q) must be a table name, optionally schema-qualified: "+
			"letters, digits and _", c.DeadLetterTable)
	}
	if c.WriteTimeout < 0 {
		return fmt.Errorf("`write_timeout` (%s) must not be negative", c.WriteTimeout)
	}
	return nil
}

// Sink writes batches of events to a PostgreSQL table. It is safe for concurrent use: each Write uses
// one pooled connection for one transaction.
type Sink struct {
	pool    *pgxpool.Pool
	ownPool bool // Close closes pool
	cfg     Config
	table   pgx.Identifier // the target, for the optimistic COPY
	insert  string
	parts   *Partitions // the day partitions of table
	// insertDeadLetters is the statement of WriteDeadLetters.
	insertDeadLetters string
	closed            atomic.Bool
	typesChecked      atomic.Bool // the table's column types are those the COPY encodes (checkTypes)
}

var (
	_ subscribers.Sink           = (*Sink)(nil)
	_ subscribers.DeadLetterSink = (*Sink)(nil)
)

// New returns a Sink that writes through pool. The pool stays the caller's: Close does not close it.
// The table must exist (see Migrate).
func New(pool *pgxpool.Pool, cfg Config) (*Sink, error) {
	if pool == nil {
		return nil, errors.New("pgsink: invalid config: nil pool")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pgsink: invalid config: %w", err)
	}
	table := pgx.Identifier(strings.Split(cfg.Table, ".")).Sanitize()
	deadLetters := pgx.Identifier(strings.Split(cfg.DeadLetterTable, ".")).Sanitize()
	id := pgx.Identifier(strings.Split(cfg.Table, "."))
	return &Sink{pool: pool, cfg: cfg, table: id, insert: insertStatement(table), parts: newPartitions(pool, id),
		insertDeadLetters: insertDeadLettersStatement(deadLetters)}, nil
}

// Open connects a pool to dsn, checks that the server answers, and returns a Sink that owns the pool:
// Close closes it. It does not migrate the schema.
func Open(ctx context.Context, dsn string, cfg Config) (*Sink, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgsink: open: %w", err)
	}
	s, err := New(pool, cfg)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			err = fmt.Errorf("pgsink: open: %w", err)
		}
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// A write first COPYs the batch straight into the target: a new batch (nearly every batch) is written
// at the speed of COPY, the ceiling. When some of its events are there already (a retry after a write
// whose outcome was lost, a replay), that COPY fails on the id (23505) and the batch is written again
// the idempotent way: COPY into a per-connection temporary table, the stage, and INSERT ... SELECT ...
// ON CONFLICT (id, ts) DO NOTHING into the target (an event's ts is part of its identity: the same
// event always has the same ts), in one transaction. On this project's 2-core reference
// machine the stage path beat one INSERT ... SELECT FROM
// unnest(array per column) ON CONFLICT statement by 12-28% for batches of 1000 and 5000 rows (and lost
// by 8-17% at 100 rows); see bench_test.go for the sink against plain COPY.
//
// The stage is defined by the sink, not by the target table, so one stage serves every target; it
// lives as long as its connection and is emptied at every commit (ON COMMIT DELETE ROWS). Rename it when
// its columns change: a connection may still hold the old one.
const (
	stageTable  = "sluice_pgsink_stage_1"
	createStage = `CREATE TEMP TABLE IF NOT EXISTS ` + stageTable + ` (
	id uuid, ts timestamptz, level text, kind text, message text, service text, request_id text,
	trace_id text, span_id text, method text, route text, path text, status int, duration_ms float8,
	client_ip text, user_agent text, bytes_in int8, bytes_out int8, error text, source text,
	request jsonb, response jsonb, attrs jsonb
) ON COMMIT DELETE ROWS`
)

// insertStatement moves the stage's rows to table; rows whose (id, ts) the table has are skipped.
func insertStatement(table string) string {
	cols := strings.Join(columnNames, ", ")
	return "INSERT INTO " + table + " (" + cols + ") SELECT " + cols + " FROM " + stageTable +
		" ON CONFLICT (id, ts) DO NOTHING"
}

// Name returns "postgres".
func (s *Sink) Name() string { return "postgres" }

// Write stores the batch's events, one row each, in one transaction: all of them or, on error, none.
// Events already stored (a retried batch, a duplicate id within the batch) are skipped.
//
// Its errors are classified (see Classify): a permanent one (subscribers.IsPermanent) means the batch
// holds an event that can never be stored, and that nothing of the batch was written; splitting the
// batch finds the event. Events that cannot be stored whatever the server says (ErrInvalidEvent: they
// fail event.Validate, have a time outside PostgreSQL's range, or cannot be encoded) are found before
// anything is sent: the error names each of them, is permanent, and nothing is written. Not writing the
// valid events of such a batch is what makes splitting it cheap and exact: each half without an invalid
// event is written once, each half with one costs no round trip, and a batch never succeeds in part.
// Errors from PostgreSQL are wrapped: errors.As(err, **pgconn.PgError) finds them.
func (s *Sink) Write(ctx context.Context, b subscribers.Batch) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(b.Events) == 0 {
		return nil
	}
	rows, bad := eventRows(b.Events)
	if len(bad) > 0 {
		return subscribers.Permanent(fmt.Errorf("pgsink: batch %s: %d of %d events cannot be stored, none written: %w",
			b.ID, len(bad), len(b.Events), errors.Join(bad...)))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	// The partitions of the batch's days (and of the next days) first: known ones cost nothing.
	ds := days(b.Events, time.Now())
	err := s.parts.Ensure(ctx, ds)
	if err == nil {
		err = s.copy(ctx, rows)
	}
	if noPartition(err) { // a partition this sink knew of was dropped (retention) meanwhile
		s.parts.Forget()
		if err = s.parts.Ensure(ctx, ds); err == nil {
			err = s.copy(ctx, rows)
		}
	}
	if err != nil {
		return Classify(fmt.Errorf("pgsink: write batch %s (%d events) to %s: %w", b.ID, len(rows), s.cfg.Table, err))
	}
	return nil
}

// copy stores rows in one transaction. Optimistic: a plain COPY into the table, at the speed of COPY.
// Only when some event is already there (a retried or replayed batch: SQLSTATE 23505 on the key) is
// the batch written again through the stage, which skips the events the table has.
func (s *Sink) copy(ctx context.Context, rows []row) error {
	if !s.typesChecked.Load() {
		if err := checkTypes(ctx, s.pool, s.table); err != nil {
			return err
		}
		s.typesChecked.Store(true)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return copyRows(ctx, tx, s.table, rows) })
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" /* unique_violation */ {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.write(ctx, tx, rows) })
	}
	return err
}

// write stores rows in tx through the stage.
func (s *Sink) write(ctx context.Context, tx pgx.Tx, rows []row) error {
	if _, err := tx.Exec(ctx, createStage); err != nil {
		return fmt.Errorf("create stage: %w", err)
	}
	if err := copyRows(ctx, tx, pgx.Identifier{stageTable}, rows); err != nil {
		return fmt.Errorf("copy to stage: %w", err)
	}
	if _, err := tx.Exec(ctx, s.insert); err != nil {
		return fmt.Errorf("insert from stage: %w", err)
	}
	return nil
}

// Close makes later writes fail with ErrClosed. It closes the pool only when the sink owns it (Open),
// waiting for writes in progress; a pool given to New is left open.
func (s *Sink) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

// Stored reports whether every event of the batch is in the table (subscribers.Verifier): a batch is
// written in one transaction, so a write cut without an answer stored all of it or none.
func (s *Sink) Stored(ctx context.Context, b subscribers.Batch) (bool, error) {
	seen := make(map[uuid.UUID]struct{}, len(b.Events))
	ids := make([]uuid.UUID, 0, len(b.Events))
	var from, to time.Time // the batch's time range: the look-up reads only its partitions
	for _, e := range b.Events {
		if e == nil {
			continue
		}
		if from.IsZero() || e.TS.Before(from) {
			from = e.TS
		}
		if to.IsZero() || e.TS.After(to) {
			to = e.TS
		}
		if _, dup := seen[e.ID]; !dup {
			seen[e.ID] = struct{}{}
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return true, nil
	}
	var n int
	err := s.pool.QueryRow(ctx, "SELECT count(DISTINCT id) FROM "+s.table.Sanitize()+" WHERE id = ANY($1) AND ts BETWEEN $2 AND $3",
		ids, from.Add(-time.Millisecond), to.Add(time.Millisecond)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("pgsink: look up batch %s: %w", b.ID, err)
	}
	return n == len(ids), nil
}
