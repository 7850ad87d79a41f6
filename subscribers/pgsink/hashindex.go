package pgsink

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Migration 0004 makes the indexes of request_id and trace_id hash indexes, under the same names. The
// ids are random, so a B-tree takes each new row at a random leaf, comparing 32-byte keys on its way
// down: with both, a COPY of 200,000 rows of the sink's took 4.8 s on the reference machine, with hash
// indexes 4.0 s (a sixth of PostgreSQL's time per row), and the hash indexes are 40% smaller. They
// serve what the indexes are for, every row of one request or one trace (request_id = $1: sluice logs
// --request-id, --trace-id); they cannot serve a range or an order, which no query of sluice's asks
// of an id.
//
// SQL in one transaction would rebuild both over the whole table while holding a lock that stops the
// writes, so it is Go, in the manner of 0003:
//
//  1. Each partition gets its hash index built concurrently (CREATE INDEX CONCURRENTLY: writes go on),
//     named <partition>_<column>_hash; an invalid one that a failed build left is dropped and built
//     again.
//  2. One short transaction (the partitions' advisory lock held, so that no day partition is attached
//     meanwhile): CREATE INDEX on the parent, which attaches the partitions' hash indexes instead of
//     building them (and builds it on a partition made since step 1: a day ahead, empty), DROP INDEX of
//     the B-tree (its partitions' with it), and the rename to the B-tree's name. The transaction
//     touches the catalog only. Under the lock it first checks that every partition holding rows
//     has its valid hash index; one that appeared since step 1 (a replayed past day) sends the
//     migration back to step 1, rather than be indexed while every write waits. On an empty table (a
//     new database) step 2 builds the empty indexes at once.
//
// It does nothing to an index that is a valid hash index already.

// hashIndexes are the indexes that 0004 makes hash indexes, by name, and their column.
var hashIndexes = []struct{ name, column string }{
	{"application_logs_request_id_idx", "request_id"},
	{"application_logs_trace_id_idx", "trace_id"},
}

// hashIDIndexes is migration 0004 (see above).
func hashIDIndexes(ctx context.Context, conn *pgx.Conn) error {
	for _, ix := range hashIndexes {
		var (
			method string
			valid  bool
		)
		err := conn.QueryRow(ctx, `SELECT am.amname::text, x.indisvalid FROM pg_class c JOIN pg_am am ON am.oid = c.relam
			JOIN pg_index x ON x.indexrelid = c.oid WHERE c.oid = to_regclass($1)`, ix.name).Scan(&method, &valid)
		if err != nil {
			return fmt.Errorf("find index %s: %w", ix.name, err)
		}
		if method == "hash" && valid {
			continue
		}
		if err := hashIndex(ctx, conn, ix.name, ix.column); err != nil {
			return fmt.Errorf("make %s a hash index: %w", ix.name, err)
		}
	}
	return nil
}

// errPartitionsChanged: a partition that holds rows and has no valid hash index appeared after step
// 1 (a replayed past day, made and filled by a sink meanwhile). Step 2 would build its index while
// holding a lock that stops every write: step 1 runs again instead.
var errPartitionsChanged = errors.New("a partition with rows and without its hash index appeared")

// hashIndex replaces the index name on column of application_logs with a hash index of that name.
func hashIndex(ctx context.Context, conn *pgx.Conn, name, column string) error {
	for attempt := 1; ; attempt++ {
		err := hashIndexOnce(ctx, conn, name, column)
		if !errors.Is(err, errPartitionsChanged) || attempt == 5 {
			return err
		}
	}
}

// partitionIndex is the name of partition's hash index on column, quoted.
func partitionIndex(partition, column string) string {
	return pgx.Identifier{partition + "_" + column + "_hash"}.Sanitize()
}

// indexValid reports whether the index ix (a name as SQL writes it) exists, and whether it is valid.
func indexValid(ctx context.Context, q querier, ix string) (exists, valid bool, err error) {
	var v *bool
	err = q.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)`, ix).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	return v != nil, v != nil && *v, err
}

// dropInvalid reports whether the index ix is there and valid; one that a failed CREATE INDEX
// CONCURRENTLY left invalid it drops (concurrently), to be built again.
func dropInvalid(ctx context.Context, conn *pgx.Conn, ix string) (valid bool, err error) {
	exists, valid, err := indexValid(ctx, conn, ix)
	if err != nil || valid || !exists {
		return valid, err
	}
	if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+ix); err != nil {
		return false, fmt.Errorf("drop invalid index %s: %w", ix, err)
	}
	return false, nil
}

func hashIndexOnce(ctx context.Context, conn *pgx.Conn, name, column string) error {
	parts, err := partitionNames(ctx, conn)
	if err != nil {
		return err
	}
	def := " USING hash (" + column + ") WHERE " + column + " IS NOT NULL"
	var empty bool
	if err := conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM "+pgx.Identifier{DefaultTable}.Sanitize()+")").Scan(&empty); err != nil {
		return err
	}
	for _, p := range parts { // step 1
		ix := partitionIndex(p, column)
		valid, err := dropInvalid(ctx, conn, ix) // an invalid one, attached, would leave the parent's invalid too
		if err != nil {
			return err
		}
		if valid {
			continue
		}
		if empty {
			continue // a new database: step 2 builds them all at once (each CONCURRENTLY build waits for other transactions)
		}
		if _, err := conn.Exec(ctx, "CREATE INDEX CONCURRENTLY "+ix+" ON "+pgx.Identifier{p}.Sanitize()+def); err != nil {
			return fmt.Errorf("build index %s: %w", ix, err)
		}
	}
	parent := pgx.Identifier{DefaultTable}.Sanitize()
	next := pgx.Identifier{DefaultTable + "_" + column + "_hash"}.Sanitize()
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { // step 2
		for _, s := range []string{
			"SET LOCAL lock_timeout = '30s'",
			fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", partitionLockKey),
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		// Under the lock no partition is made: every one that holds rows must have its index now.
		now, err := partitionNames(ctx, tx)
		if err != nil {
			return err
		}
		for _, p := range now {
			if _, valid, err := indexValid(ctx, tx, partitionIndex(p, column)); err != nil || valid {
				if err != nil {
					return err
				}
				continue
			}
			var rows bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{p}.Sanitize()+")").Scan(&rows); err != nil {
				return err
			}
			if rows {
				return fmt.Errorf("partition %s: %w", p, errPartitionsChanged)
			}
		}
		for _, s := range []string{
			"CREATE INDEX " + next + " ON " + parent + def,
			"DROP INDEX " + pgx.Identifier{name}.Sanitize(),
			"ALTER INDEX " + next + " RENAME TO " + pgx.Identifier{name}.Sanitize(),
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
}

// partitionNames returns the names of application_logs's partitions.
func partitionNames(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1) ORDER BY 1`, DefaultTable)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
