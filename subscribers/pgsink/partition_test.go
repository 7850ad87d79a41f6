package pgsink_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// partitions returns the names of application_logs' partitions, sorted.
func partitions(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	var names []string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'application_logs'::regclass`).Scan(&names)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func count(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func day(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

// A fresh database gets a partitioned application_logs with the partitions of today and the next
// days, and the indexes of the reading queries under their documented names.
func TestMigrateMakesAPartitionedTable(t *testing.T) {
	pool := migratedPool(t)
	today := day(time.Now())
	want := []string{}
	for i := 0; i <= pgsink.AheadDays; i++ {
		want = append(want, "application_logs_p"+today.AddDate(0, 0, i).Format("20060102"))
	}
	if got := partitions(t, pool); !slices.Equal(got, want) {
		t.Errorf("partitions %v, want %v", got, want)
	}
	var indexes []string
	if err := pool.QueryRow(context.Background(), `SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes
		WHERE tablename = 'application_logs'`).Scan(&indexes); err != nil {
		t.Fatal(err)
	}
	wantIdx := []string{"application_logs_level_ts_idx", "application_logs_pkey", "application_logs_request_id_idx",
		"application_logs_status_ts_idx", "application_logs_trace_id_idx", "application_logs_ts_idx"}
	if !slices.Equal(indexes, wantIdx) {
		t.Errorf("indexes %v, want %v", indexes, wantIdx)
	}
	if got, want := idIndexes(t, pool)["application_logs"], []string{"application_logs_request_id_idx hash", "application_logs_trace_id_idx hash"}; !slices.Equal(got, want) {
		t.Errorf("the indexes of the ids: %v, want %v", got, want)
	}
}

// Events of days without a partition (a replay of last year's events, a clock a month ahead) are
// stored: the sink makes their partitions. Writing them again stores nothing more.
func TestWriteMakesTheMissingPartitions(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	ctx := context.Background()
	now := time.Now().UTC()
	var events []*event.Event
	for _, at := range []time.Time{now.AddDate(-1, 0, 0), now.AddDate(0, 1, 0), now, now.AddDate(0, 0, -40)} {
		events = append(events, sinktest.Events(3, at)...)
	}
	b := subscribers.NewBatch(events)
	for range 2 {
		if err := s.Write(ctx, b); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(events) {
		t.Errorf("%d rows, want %d", n, len(events))
	}
	got := partitions(t, pool)
	for _, at := range []time.Time{now.AddDate(-1, 0, 0), now.AddDate(0, 1, 0), now.AddDate(0, 0, -40)} {
		if name := "application_logs_p" + day(at).Format("20060102"); !slices.Contains(got, name) {
			t.Errorf("no partition %s in %v", name, got)
		}
	}
	if ok, err := s.Stored(ctx, b); err != nil || !ok {
		t.Errorf("Stored = %v, %v; want true", ok, err)
	}
}

// Prune drops exactly the day partitions that end at or before the cutoff; a dry run reports the same
// list and drops nothing. A later write of an event of a dropped day (the sink still thought it had
// its partition) is stored all the same.
func TestPruneDropsWholeDays(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	ctx := context.Background()
	today := day(time.Now())
	var events []*event.Event
	for d := 0; d < 10; d++ {
		events = append(events, sinktest.Events(5, today.AddDate(0, 0, -d).Add(12*time.Hour))...)
	}
	if err := s.Write(ctx, subscribers.NewBatch(events)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO application_logs_dead_letter (route, reason, raw, failed_at)
		VALUES ('r', 'invalid_data', 'x', now() - interval '20 days'), ('r', 'invalid_data', 'y', now())`); err != nil {
		t.Fatal(err)
	}
	cutoff := today.AddDate(0, 0, -6).Add(3 * time.Hour) // days -9..-7 end before it; day -6 holds it
	dry, err := s.Prune(ctx, cutoff, true)
	if err != nil {
		t.Fatal(err)
	}
	before := partitions(t, pool)
	rep, err := s.Prune(ctx, cutoff, false)
	if err != nil {
		t.Fatal(err)
	}
	names := func(r subscribers.PruneReport) (out []string) {
		for _, u := range r.Removed {
			out = append(out, u.Name)
		}
		return out
	}
	var want []string
	for d := 9; d >= 7; d-- {
		want = append(want, "application_logs_p"+today.AddDate(0, 0, -d).Format("20060102"))
	}
	want = append(want, "application_logs_dead_letter (rows failed before the cutoff)")
	if !slices.Equal(names(dry), want) || !slices.Equal(names(rep), want) {
		t.Errorf("dry run removed %v, prune %v; want %v", names(dry), names(rep), want)
	}
	if len(before) != 10+pgsink.AheadDays {
		t.Errorf("the dry run left %d partitions, want %d", len(before), 10+pgsink.AheadDays)
	}
	if n, exact := rep.Events(); n != 3*5+1 || !exact {
		t.Errorf("prune reports %d events (exact %v), want 16", n, exact)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != 7*5 {
		t.Errorf("%d rows left, want %d", n, 7*5)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs_dead_letter"); n != 1 {
		t.Errorf("%d dead letters left, want 1", n)
	}
	if want := today.AddDate(0, 0, -6).Add(12 * time.Hour); !rep.Oldest.Equal(want) {
		t.Errorf("oldest kept %s, want %s", rep.Oldest, want)
	}
	again, err := s.Prune(ctx, cutoff, false)
	if err != nil || len(again.Removed) != 0 {
		t.Errorf("a second prune removed %v (%v), want nothing", again.Removed, err)
	}
	old := sinktest.Events(2, today.AddDate(0, 0, -8))
	if err := s.Write(ctx, subscribers.NewBatch(old)); err != nil {
		t.Fatalf("writing an event of a pruned day: %v", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs WHERE ts < $1", cutoff); n != 2 {
		t.Errorf("%d rows before the cutoff, want 2", n)
	}
}

// Migration 0003 converts a table that the previous release filled (migrations 0001-0002, written by
// its COPY) into the partitioned one without losing a row: the rows stay in application_logs_legacy,
// attached for everything before the first day partition, and new events go to day partitions.
func TestMigrateConvertsAFilledTable(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if err := pgsink.ApplyUpTo(ctx, pool, 2); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var events []*event.Event
	for d := 0; d < 30; d++ {
		events = append(events, sinktest.Events(40, now.AddDate(0, 0, -d))...)
	}
	rows, bad := pgsink.EventRows(events)
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, pgsink.ColumnNames, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	applied, err := pgsink.Migrate(ctx, pool)
	if err != nil || len(applied) != 2 {
		t.Fatalf("Migrate applied %v, %v; want 0003 and 0004", applied, err)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(events) {
		t.Errorf("%d rows after the migration, want %d", n, len(events))
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs_legacy"); n != len(events) {
		t.Errorf("application_logs_legacy holds %d rows, want %d", n, len(events))
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs WHERE id = $1 AND ts = $2", events[7].ID, events[7].TS); n != 1 {
		t.Errorf("row by key: %d", n)
	}
	// The sink writes old events again (a replay: skipped) and new ones.
	s := newSink(t, pool, pgsink.Config{})
	fresh := sinktest.Events(10, now.AddDate(0, 0, 5))
	if err := s.Write(ctx, subscribers.NewBatch(append(events[:50:50], fresh...))); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(events)+10 {
		t.Errorf("%d rows after a replay and 10 new, want %d", n, len(events)+10)
	}
	// Retention drops the legacy partition only once the whole of it is past the cutoff.
	rep, err := s.Prune(ctx, now.AddDate(0, 0, -10), false)
	if err != nil || len(rep.Removed) != 0 {
		t.Errorf("prune at -10 days removed %v (%v), want nothing: the legacy partition holds newer rows", rep.Removed, err)
	}
	rep, err = s.Prune(ctx, day(now).AddDate(0, 0, 2), true)
	if err != nil || len(rep.Removed) != 1 || rep.Removed[0].Name != "application_logs_legacy" || rep.Removed[0].Events != int64(len(events)) {
		t.Errorf("dry prune after the legacy range removes %+v (%v), want application_logs_legacy with %d rows", rep.Removed, err, len(events))
	}
}
