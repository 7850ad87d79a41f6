package pgsink_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// idIndexes returns, for application_logs and each of its partitions, the access method of the
// index on request_id and on trace_id (and whether it is valid), keyed by table.
func idIndexes(t *testing.T, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT t.relname::text, i.relname::text, am.amname::text, x.indisvalid
		FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am am ON am.oid = i.relam
		WHERE (t.relname = 'application_logs' OR t.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'application_logs'::regclass))
		AND pg_get_indexdef(x.indexrelid) ~ '\((request|trace)_id\)'
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string][]string{}
	for rows.Next() {
		var table, index, method string
		var valid bool
		if err := rows.Scan(&table, &index, &method, &valid); err != nil {
			t.Fatal(err)
		}
		if !valid {
			method += " (invalid)"
		}
		got[table] = append(got[table], index+" "+method)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// Migration 0004 makes the request_id and trace_id indexes hash indexes under their names, on a table
// that holds rows in several day partitions and in the legacy partition of 0003, attaching a
// partition's hash index that an interrupted run built already; the rows stay, and the queries by id
// use the new indexes.
func TestMigrateMakesTheIdIndexesHash(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if err := pgsink.ApplyUpTo(ctx, pool, 2); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	legacy := sinktest.Events(50, now.AddDate(0, 0, -3))
	rows, bad := pgsink.EventRows(legacy)
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, pgsink.ColumnNames, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	if err := pgsink.ApplyUpTo(ctx, pool, 3); err != nil { // the release before: partitioned, B-trees
		t.Fatal(err)
	}
	s := newSink(t, pool, pgsink.Config{})
	var fresh []*event.Event
	for d := 0; d < 3; d++ {
		fresh = append(fresh, sinktest.Events(40, now.AddDate(0, 0, d*3))...)
	}
	if err := s.Write(ctx, subscribers.NewBatch(fresh)); err != nil {
		t.Fatal(err)
	}
	parts := partitions(t, pool)
	if len(parts) < 4 || !slices.Contains(parts, "application_logs_legacy") {
		t.Fatalf("partitions %v: want the legacy one and several days", parts)
	}
	// An interrupted run built one partition's hash index already.
	if _, err := pool.Exec(ctx, "CREATE INDEX "+parts[0]+"_request_id_hash ON "+parts[0]+" USING hash (request_id) WHERE request_id IS NOT NULL"); err != nil {
		t.Fatal(err)
	}

	applied, err := pgsink.Migrate(ctx, pool)
	if err != nil || !slices.Equal(applied, []string{"0004_hash_id_indexes (Go)"}) {
		t.Fatalf("Migrate applied %v, %v; want 0004", applied, err)
	}
	got := idIndexes(t, pool)
	if want := []string{"application_logs_request_id_idx hash", "application_logs_trace_id_idx hash"}; !slices.Equal(got["application_logs"], want) {
		t.Errorf("application_logs: indexes %v, want %v", got["application_logs"], want)
	}
	for _, p := range parts {
		want := []string{p + "_request_id_hash hash", p + "_trace_id_hash hash"}
		if p != parts[0] && !strings.HasPrefix(p, "application_logs_legacy") && !slices.Equal(got[p], want) {
			// a partition that existed before: its own index, built concurrently, attached
			t.Errorf("%s: indexes %v, want %v", p, got[p], want)
		}
		if len(got[p]) != 2 || strings.Contains(strings.Join(got[p], ","), "btree") || strings.Contains(strings.Join(got[p], ","), "invalid") {
			t.Errorf("%s: indexes %v, want two valid hash indexes", p, got[p])
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(legacy)+len(fresh) {
		t.Errorf("%d rows after the migration, want %d", n, len(legacy)+len(fresh))
	}

	// The queries by id use them, and find the rows.
	for _, e := range []*event.Event{legacy[2], fresh[70]} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		_, _ = tx.Exec(ctx, "SET LOCAL enable_seqscan = off")
		r, err := tx.Query(ctx, "EXPLAIN SELECT id FROM application_logs WHERE request_id = $1", e.RequestID)
		if err == nil {
			for r.Next() {
				var line string
				_ = r.Scan(&line)
				plan = append(plan, line)
			}
			err = r.Err()
		}
		_ = tx.Rollback(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(plan, "\n"), "_request_id_hash") {
			t.Errorf("the plan of a query by request_id uses no hash index:\n%s", strings.Join(plan, "\n"))
		}
		if e.RequestID == "" {
			t.Fatalf("event %s has no request id", e.ID)
		}
		if n := count(t, pool, "SELECT count(*) FROM application_logs WHERE request_id = $1 AND id = $2", e.RequestID, e.ID); n != 1 {
			t.Errorf("event %s by its request id: %d rows", e.ID, n)
		}
	}

	// A day partition made from now on gets the hash indexes; the migration is not applied again.
	if err := s.Write(ctx, subscribers.NewBatch(sinktest.Events(5, now.AddDate(0, 0, 40)))); err != nil {
		t.Fatal(err)
	}
	p := "application_logs_p" + day(now.AddDate(0, 0, 40)).Format("20060102")
	if g := idIndexes(t, pool)[p]; len(g) != 2 || !strings.HasSuffix(g[0], " hash") || !strings.HasSuffix(g[1], " hash") {
		t.Errorf("new partition %s: indexes %v, want two hash indexes", p, g)
	}
	if again, err := pgsink.Migrate(ctx, pool); err != nil || len(again) != 0 {
		t.Errorf("second Migrate applied %v, %v; want nothing", again, err)
	}
}

// An invalid hash index that a failed build left on a partition is dropped and built again, on an
// empty table too: attached, it would leave the parent's index invalid for good.
func TestMigrateRebuildsAnInvalidHashIndex(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if err := pgsink.ApplyUpTo(ctx, pool, 3); err != nil {
		t.Fatal(err)
	}
	p := partitions(t, pool)[0]
	for _, q := range []string{
		"CREATE INDEX " + p + "_trace_id_hash ON " + p + " USING hash (trace_id) WHERE trace_id IS NOT NULL",
		"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '" + p + "_trace_id_hash'::regclass",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	for table, ixs := range idIndexes(t, pool) {
		if len(ixs) != 2 || strings.Contains(strings.Join(ixs, ","), "invalid") || strings.Contains(strings.Join(ixs, ","), "btree") {
			t.Errorf("%s: indexes %v, want two valid hash indexes", table, ixs)
		}
	}
}
