package acceptance_test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// runPrune runs the sluice binary's prune command with env and returns its stdout; it fails the test
// unless the command exits 0.
func runPrune(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(sluiceBin, append([]string{"prune"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sluice prune %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, stderr.String())
	}
	return string(out)
}

var (
	unitLine   = regexp.MustCompile(`(?m)^  (removed|would remove) (\S+)  `)
	cutoffLine = regexp.MustCompile(`(?m)^(postgres|blob): cutoff (\S+) `)
)

// pruned returns the units that sluice prune's output lists per sink, and each sink's cutoff.
func pruned(t *testing.T, out string) (units map[string][]string, cutoffs map[string]time.Time) {
	t.Helper()
	units, cutoffs = map[string][]string{}, map[string]time.Time{}
	sink := ""
	for _, line := range strings.Split(out, "\n") {
		if m := cutoffLine.FindStringSubmatch(line); m != nil {
			sink = m[1]
			c, err := time.Parse(time.RFC3339, m[2])
			if err != nil {
				t.Fatal(err)
			}
			cutoffs[sink] = c
		} else if m := unitLine.FindStringSubmatch(line); m != nil {
			units[sink] = append(units[sink], m[2])
		}
	}
	return units, cutoffs
}

// 45 days of events, written through the sinks with their own timestamps into PostgreSQL, a local
// archive and an Azure archive (Azurite), plus events of days that had no partition (a year ago, next
// month): `sluice prune` with a retention of 30 days removes exactly the day partitions and the hour
// prefixes that end before its cutoff, from every store, and nothing else; -dry-run removes nothing
// and prints the same list.
func TestPruneRemovesExactlyWhatIsPastTheRetention(t *testing.T) {
	dsn, azure, container, dir := testenv.Postgres(t), testenv.Azurite(t), testenv.Container(t), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pg, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	localStore, err := blobsink.NewDirStore(filepath.Join(dir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	azStore, err := azurestore.Open(ctx, azurestore.Config{ConnectionString: azure, Container: container})
	if err != nil {
		t.Fatal(err)
	}
	defer azStore.Close()
	local, err := blobsink.New(localStore, blobsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	az, err := blobsink.New(azStore, blobsink.Config{})
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	var events []*event.Event
	for d := 0; d < 45; d++ {
		for _, h := range []time.Duration{90 * time.Minute, 810 * time.Minute} { // 01:30 and 13:30 UTC
			events = append(events, sinktest.Events(4, today.AddDate(0, 0, -d).Add(h))...)
		}
	}
	events = append(events, sinktest.Events(3, now.AddDate(-1, 0, 0))...) // a replay of last year's
	events = append(events, sinktest.Events(3, now.AddDate(0, 1, 0))...)  // a clock a month ahead
	for _, s := range []subscribers.Sink{pg, local, az} {
		for i := 0; i < len(events); i += 100 {
			batch := subscribers.NewBatch(events[i:min(i+100, len(events))])
			if err := s.Write(ctx, batch); err != nil {
				t.Fatalf("%s: %v", s.Name(), err)
			}
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM application_logs").Scan(&rows); err != nil || rows != len(events) {
		t.Fatalf("application_logs holds %d rows (%v), want %d: every day has its partition", rows, err, len(events))
	}

	env := []string{"SLUICE_POSTGRES_DSN=" + dsn, "SLUICE_POSTGRES_RETENTION=720h", "SLUICE_BLOB_RETENTION=720h",
		"SLUICE_BLOB_DIR=" + dir, "SLUICE_BLOB_CONTAINER=logs"}
	azureEnv := []string{"SLUICE_POSTGRES_DSN=" + dsn, "SLUICE_BLOB_RETENTION=720h",
		"SLUICE_BLOB_CONNECTION_STRING=" + azure, "SLUICE_BLOB_CONTAINER=" + container}
	localBefore, azBefore := names(t, localStore), names(t, azStore)

	dry := runPrune(t, env, "-dry-run")
	azDry := runPrune(t, azureEnv, "-dry-run", "-sink", "blob")
	if got := names(t, localStore); !slices.Equal(got, localBefore) {
		t.Errorf("the dry run deleted blobs: %d left of %d", len(got), len(localBefore))
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(events) {
		t.Errorf("the dry run deleted rows: %d left of %d", n, len(events))
	}
	real := runPrune(t, env)
	azReal := runPrune(t, azureEnv, "-sink", "blob")
	t.Logf("sluice prune -dry-run:\n%s\nsluice prune:\n%s", dry, real)

	dryUnits, _ := pruned(t, dry)
	units, cutoffs := pruned(t, real)
	azDryUnits, _ := pruned(t, azDry)
	azUnits, azCutoffs := pruned(t, azReal)
	if !maps.EqualFunc(dryUnits, units, slices.Equal) || !slices.Equal(azDryUnits["blob"], azUnits["blob"]) {
		t.Errorf("the dry run lists %v and %v, the prune %v and %v", dryUnits, azDryUnits, units, azUnits)
	}

	// PostgreSQL: exactly the day partitions that end at or before the cutoff are gone.
	cut := cutoffs["postgres"]
	var wantRows int
	wantDays := map[string]bool{}
	var wantGone []string
	for _, e := range events {
		d := e.TS.UTC().Truncate(24 * time.Hour)
		if d.Add(24 * time.Hour).After(cut) {
			wantRows++
			wantDays[d.Format(time.DateOnly)] = true
		} else if p := "application_logs_p" + d.Format("20060102"); !slices.Contains(wantGone, p) {
			wantGone = append(wantGone, p)
		}
	}
	slices.Sort(wantGone)
	gotGone := slices.DeleteFunc(slices.Clone(units["postgres"]), func(s string) bool { return !strings.HasPrefix(s, "application_logs_p") })
	if !slices.Equal(gotGone, wantGone) {
		t.Errorf("prune removed the partitions %v, want %v", gotGone, wantGone)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != wantRows {
		t.Errorf("%d rows left, want %d", n, wantRows)
	}
	var days []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(DISTINCT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')) FROM application_logs`).Scan(&days); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(wantDays)); !slices.Equal(days, got) {
		t.Errorf("days left %v, want %v", days, got)
	}

	// The archives: exactly the hour prefixes that end at or before the cutoff are gone.
	for _, c := range []struct {
		name   string
		store  blobsink.PruneStore
		before []string
		cut    time.Time
	}{{"local", localStore, localBefore, cutoffs["blob"]}, {"azure", azStore, azBefore, azCutoffs["blob"]}} {
		var want []string
		for _, n := range c.before {
			hour, err := time.Parse("2006/01/02/15", n[:13])
			if err != nil {
				t.Fatal(err)
			}
			if hour.Add(time.Hour).After(c.cut) {
				want = append(want, n)
			}
		}
		if got := names(t, c.store); !slices.Equal(got, want) {
			t.Errorf("%s archive: %d blobs left of %d, want %d", c.name, len(got), len(c.before), len(want))
		}
		if len(want) == 0 || len(want) == len(c.before) {
			t.Errorf("%s archive: %d of %d blobs kept: the test must keep some and remove some", c.name, len(want), len(c.before))
		}
	}
}

func names(t *testing.T, s blobsink.Store) []string {
	t.Helper()
	n, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func count(t *testing.T, pool *pgxpool.Pool, q string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A database that the previous release migrated (0001-0002) and filled is migrated by `sluice migrate`
// to the partitioned table without losing a row.
func TestMigrateToPartitionsKeepsEveryRow(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// The previous release's schema, from its migration files, and its record of them.
	for i, f := range []string{"0001_application_logs.sql", "0002_dead_letter.sql"} {
		sql, err := os.ReadFile(filepath.Join("..", "subscribers", "pgsink", "migrations", f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, string(sql)); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS sluice_schema_migrations (version int PRIMARY KEY, name text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO sluice_schema_migrations (version, name) VALUES ($1, $2)", i+1, f); err != nil {
			t.Fatal(err)
		}
	}
	var events []*event.Event
	for d := 0; d < 20; d++ {
		events = append(events, sinktest.Events(50, time.Now().AddDate(0, 0, -d))...)
	}
	events = append(events, sinktest.Events(5, time.Now().AddDate(-2, 0, 0))...)
	rows, err := pgsink.Rows(events)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"application_logs"}, pgsink.Columns(), pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBin, "migrate")
	cmd.Env = append(os.Environ(), "SLUICE_POSTGRES_DSN="+dsn)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "applied now: 2") { // 0003 (partitions) and 0004 (hash indexes)
		t.Fatalf("sluice migrate: %v\n%s", err, out)
	}
	if n := count(t, pool, "SELECT count(*) FROM application_logs"); n != len(events) {
		t.Errorf("%d rows after the migration, want %d", n, len(events))
	}
	var kind string
	if err := pool.QueryRow(ctx, "SELECT relkind::text FROM pg_class WHERE relname = 'application_logs'").Scan(&kind); err != nil || kind != "p" {
		t.Errorf("application_logs is of kind %q (%v), want p (partitioned)", kind, err)
	}
	for _, ix := range []string{"application_logs_request_id_idx", "application_logs_trace_id_idx"} {
		var method string
		if err := pool.QueryRow(ctx, "SELECT am.amname::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.oid = to_regclass($1)",
			ix).Scan(&method); err != nil || method != "hash" {
			t.Errorf("%s is a %q index (%v), want hash", ix, method, err)
		}
	}
	var withRequest int
	for _, e := range events {
		if e.RequestID != "" {
			withRequest++
			var n int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM application_logs WHERE request_id = $1 AND id = $2", e.RequestID, e.ID).Scan(&n); err != nil || n != 1 {
				t.Errorf("event %s by its request id after the migration: %d rows (%v)", e.ID, n, err)
			}
			if withRequest == 20 {
				break
			}
		}
	}
	var missing int
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID.String()
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM unnest($1::uuid[]) AS x(id) WHERE NOT EXISTS (SELECT 1 FROM application_logs a WHERE a.id = x.id)",
		ids).Scan(&missing); err != nil || missing != 0 {
		t.Errorf("%d events missing after the migration (%v)", missing, err)
	}
}
