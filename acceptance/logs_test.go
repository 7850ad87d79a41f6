package acceptance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// logsDay is the day of the stored events in these tests.
var logsDay = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// logsFixture is a day of events: 24 hours of realistic traffic (sinktest.Events, every level), and
// one request of ours, "req-needle", whose HTTP event and two application logs are in hour 13, plus
// events chosen for each filter.
func logsFixture() (named map[string]*event.Event, all []*event.Event) {
	named = map[string]*event.Event{}
	for h := range 24 {
		all = append(all, sinktest.Events(40, logsDay.Add(time.Duration(h)*time.Hour+17*time.Minute))...)
	}
	add := func(name string, at time.Duration, level event.Level, kind event.Kind, msg string, set func(*event.Event)) {
		e := event.New(level, kind, msg)
		e.TS, e.Service = logsDay.Add(at), "shop"
		set(e)
		named[name] = e
		all = append(all, e)
	}
	at13 := 13*time.Hour + 5*time.Minute
	add("needle-http", at13, event.LevelError, event.KindHTTP, "GET /checkout/42 500", func(e *event.Event) {
		e.Method, e.Route, e.Path, e.Status, e.DurationMS = "GET", "/checkout/:id", "/checkout/42", 500, 12.5
		e.RequestID, e.TraceID, e.Error = "req-needle", "trace-needle", "card declined by the issuer"
		e.Request = &event.Message{Query: "coupon=x", Headers: map[string][]string{"Accept": {"application/json"}}}
	})
	add("needle-app-1", at13-3*time.Millisecond, event.LevelWarn, event.KindApp, "card check slow", func(e *event.Event) {
		e.RequestID, e.TraceID, e.Attrs = "req-needle", "trace-needle", map[string]any{"ms": 812.0}
	})
	add("needle-app-2", at13+time.Millisecond, event.LevelError, event.KindApp, "checkout failed", func(e *event.Event) {
		e.RequestID, e.TraceID, e.Error = "req-needle", "trace-needle", "issuer said no"
	})
	add("teapot", 20*time.Hour, event.LevelWarn, event.KindHTTP, "GET /brew 418", func(e *event.Event) {
		e.Method, e.Route, e.Path, e.Status, e.RequestID = "GET", "/brew", "/brew", 418, "req-teapot"
	})
	return named, all
}

// writeThrough writes events through a sink in batches of 500, in an order that is not time order.
func writeThrough(t *testing.T, s subscribers.Sink, events []*event.Event) {
	t.Helper()
	shuffled := slices.Clone(events)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for b := range slices.Chunk(shuffled, 500) {
		if err := s.Write(context.Background(), subscribers.NewBatch(b)); err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
	}
}

// migratedSink returns a pool on a fresh, migrated database and the PostgreSQL sink writing through
// it, and the database's DSN.
func migratedSink(t *testing.T) (*pgxpool.Pool, *pgsink.Sink, string) {
	t.Helper()
	pool := testenv.MigratedPostgres(t)
	sink, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return pool, sink, pool.Config().ConnString()
}

// logsRun runs sluice logs with the environment given and returns stdout, stderr and the exit code.
func logsRun(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, append([]string{"logs"}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sluice logs %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errs.String(), code
}

// decodeLines decodes --json output, one event per line.
func decodeLines(t *testing.T, out string) []*event.Event {
	t.Helper()
	events, bad := event.Decode([]byte(out))
	if len(bad) > 0 {
		t.Fatalf("--json printed a line that is not an event: %v", bad[0])
	}
	return events
}

// expected returns the ids of the events that pass keep, in time order.
func expected(all []*event.Event, keep func(*event.Event) bool) []string {
	var sel []*event.Event
	for _, e := range all {
		if keep(e) {
			sel = append(sel, e)
		}
	}
	sort.SliceStable(sel, func(i, j int) bool {
		if !sel[i].TS.Equal(sel[j].TS) {
			return sel[i].TS.Before(sel[j].TS)
		}
		return bytes.Compare(sel[i].ID[:], sel[j].ID[:]) < 0
	})
	ids := make([]string, len(sel))
	for i, e := range sel {
		ids[i] = e.ID.String()
	}
	return ids
}

// storedFields decodes an event's JSON into its fields by name, so that two encodings compare
// whatever their key order.
func storedFields(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// sluice logs against PostgreSQL: every filter returns exactly the rows expected, in time order, and
// --json lines are the stored events with the stored field names. Nothing matched exits 1; a
// PostgreSQL that does not answer exits 2 naming its host and port.
func TestLogsFromPostgres(t *testing.T) {
	_, sink, dsn := migratedSink(t)
	named, all := logsFixture()
	writeThrough(t, sink, all)
	env := []string{"SLUICE_POSTGRES_DSN=" + dsn}
	day := []string{"--since", logsDay.Format(time.RFC3339), "--until", logsDay.Add(24 * time.Hour).Format(time.RFC3339)}
	inDay := func(e *event.Event) bool { return !e.TS.Before(logsDay) && e.TS.Before(logsDay.Add(24*time.Hour)) }
	for _, c := range []struct {
		name string
		args []string
		keep func(*event.Event) bool
	}{
		{"request id", []string{"--request-id", "req-needle"}, func(e *event.Event) bool { return e.RequestID == "req-needle" }},
		{"trace id", []string{"--trace-id", "trace-needle"}, func(e *event.Event) bool { return e.TraceID == "trace-needle" }},
		{"level and above", []string{"--level", "warn"}, func(e *event.Event) bool { return e.Level == event.LevelWarn || e.Level == event.LevelError }},
		{"one level", []string{"--level", "=warn"}, func(e *event.Event) bool { return e.Level == event.LevelWarn }},
		{"status class", []string{"--status", "5xx"}, func(e *event.Event) bool { return e.Status >= 500 && e.Status <= 599 }},
		{"status code", []string{"--status", "418"}, func(e *event.Event) bool { return e.Status == 418 }},
		{"status list", []string{"--status", "404,409"}, func(e *event.Event) bool { return e.Status == 404 || e.Status == 409 }},
		{"path glob", []string{"--path", "/api/v1/customers/*/address"}, func(e *event.Event) bool {
			return strings.HasPrefix(e.Path, "/api/v1/customers/") && strings.HasSuffix(e.Path, "/address")
		}},
		{"route", []string{"--route", "/api/v1/orders/:id"}, func(e *event.Event) bool { return e.Route == "/api/v1/orders/:id" }},
		{"grep message or error", []string{"--grep", "declined"}, func(e *event.Event) bool {
			return strings.Contains(e.Message, "declined") || strings.Contains(e.Error, "declined")
		}},
		{"a time range", []string{"--since", "2026-11-30T13:00:00Z", "--until", "2026-11-30 14:00"}, func(e *event.Event) bool {
			return !e.TS.Before(logsDay.Add(13*time.Hour)) && e.TS.Before(logsDay.Add(14*time.Hour))
		}},
		{"combined", []string{"--level", "error", "--path", "/api/*", "--status", "5xx"}, func(e *event.Event) bool {
			return e.Level == event.LevelError && strings.HasPrefix(e.Path, "/api/") && e.Status >= 500
		}},
	} {
		args := append(slices.Clone(c.args), "--json", "--limit", "0")
		if !slices.Contains(args, "--since") {
			args = append(args, day...)
		}
		out, errs, code := logsRun(t, env, args...)
		var got []string
		for _, e := range decodeLines(t, out) {
			got = append(got, e.ID.String())
		}
		want := expected(all, func(e *event.Event) bool { return inDay(e) && c.keep(e) })
		if code != 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("%s (sluice logs %s): exit %d, %d events, want %d\nstderr: %s", c.name, strings.Join(args, " "), code, len(got), len(want), errs)
		}
	}

	// --json: each line is the stored event, field for field.
	out, _, _ := logsRun(t, env, "--request-id", "req-needle", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	order := []string{"needle-app-1", "needle-http", "needle-app-2"}
	if len(lines) != len(order) {
		t.Fatalf("--request-id req-needle --json: %d lines, want %d:\n%s", len(lines), len(order), out)
	}
	for i, name := range order {
		want, _ := named[name].AppendJSON(nil)
		if got := storedFields(t, []byte(lines[i])); !reflect.DeepEqual(got, storedFields(t, want)) {
			t.Errorf("line %d is\n%s\nwant %s's\n%s", i+1, lines[i], name, want)
		}
	}

	// The table, and a limit that leaves older events out.
	out, errs, code := logsRun(t, env, "--request-id", "req-needle")
	if code != 0 || !strings.HasPrefix(out, "TIME (UTC)") || !strings.Contains(out, "GET /checkout/42 error=\"card declined by the issuer\"") ||
		strings.Count(out, "req-needle") != 3 || strings.Contains(out, "\x1b[") {
		t.Errorf("table: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = logsRun(t, env, "--level", "error", "--limit", "2", "--json")
	if got := decodeLines(t, out); code != 0 || len(got) != 2 || !strings.Contains(errs, "more events matched than --limit 2") {
		t.Errorf("--limit 2: exit %d, %d events, stderr %q", code, len(got), errs)
	}

	// Nothing matched: 1. PostgreSQL down: 2, naming where.
	if out, errs, code := logsRun(t, env, "--request-id", "nobody"); code != 1 || out != "" || !strings.Contains(errs, "no events matched") {
		t.Errorf("nothing matched: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	addr := freePort(t) // nothing listens there
	_, errs, code = logsRun(t, []string{"SLUICE_POSTGRES_DSN=postgres://postgres@" + addr + "/x?sslmode=disable&connect_timeout=5"})
	if code != 2 || !strings.Contains(errs, "PostgreSQL at "+addr+" is not reachable") {
		t.Errorf("PostgreSQL down: exit %d, stderr %q", code, errs)
	}
}

// sluice logs --archive --request-id over a day of archive finds the request's HTTP event and
// application logs together, in time order, in a local directory and in Azurite; the other filters
// mean there what they mean in PostgreSQL.
func TestLogsFromTheArchive(t *testing.T) {
	named, all := logsFixture()
	dir := t.TempDir()
	local, err := blobsink.NewDirStore(filepath.Join(dir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	container := testenv.Container(t)
	cs := testenv.Azurite(t)
	azure, err := azurestore.Open(context.Background(), azurestore.Config{ConnectionString: cs, Container: container})
	if err != nil {
		t.Fatal(err)
	}
	defer azure.Close()
	stores := map[string][]string{
		"local directory": {"SLUICE_BLOB_DIR=" + dir},
		"Azurite":         {"SLUICE_BLOB_CONNECTION_STRING=" + cs, "SLUICE_BLOB_CONTAINER=" + container},
	}
	for _, s := range []blobsink.Store{local, azure} {
		sink, err := blobsink.New(s, blobsink.Config{})
		if err != nil {
			t.Fatal(err)
		}
		writeThrough(t, sink, all)
	}
	day := []string{"--since", "2026-11-30", "--until", "2026-12-01"}
	for where, env := range stores {
		env = append(env, "SLUICE_POSTGRES_DSN=postgres://nobody@127.0.0.1:1/none") // not used
		out, errs, code := logsRun(t, env, append([]string{"--archive", "--request-id", "req-needle", "--json"}, day...)...)
		var got []string
		for _, e := range decodeLines(t, out) {
			for name, n := range named {
				if n.ID == e.ID {
					got = append(got, name)
				}
			}
		}
		if want := []string{"needle-app-1", "needle-http", "needle-app-2"}; code != 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: --archive --request-id req-needle: exit %d, %v, want %v\nstderr: %s", where, code, got, want, errs)
		}
		for _, c := range []struct {
			args []string
			keep func(*event.Event) bool
		}{
			{[]string{"--status", "418"}, func(e *event.Event) bool { return e.Status == 418 }},
			{[]string{"--level", "error", "--path", "/api/*", "--status", "5xx"}, func(e *event.Event) bool {
				return e.Level == event.LevelError && strings.HasPrefix(e.Path, "/api/") && e.Status >= 500
			}},
			{[]string{"--grep", "declined", "--trace-id", "trace-needle"}, func(e *event.Event) bool {
				return e.TraceID == "trace-needle" && (strings.Contains(e.Message, "declined") || strings.Contains(e.Error, "declined"))
			}},
		} {
			args := append(append([]string{"--archive", "--json", "--limit", "0"}, day...), c.args...)
			out, errs, code := logsRun(t, env, args...)
			var ids []string
			for _, e := range decodeLines(t, out) {
				ids = append(ids, e.ID.String())
			}
			if want := expected(all, c.keep); code != 0 || !reflect.DeepEqual(ids, want) {
				t.Errorf("%s: sluice logs %s: exit %d, %d events, want %d\nstderr: %s", where, strings.Join(args, " "), code, len(ids), len(want), errs)
			}
		}
		out, _, code = logsRun(t, env, append([]string{"--archive", "--request-id", "req-needle", "--wide"}, day...)...)
		if code != 0 || !strings.Contains(out, `request: {"query":"coupon=x","headers":{"Accept":["application/json"]}}`) {
			t.Errorf("%s: --wide: exit %d\n%s", where, code, out)
		}
		if _, _, code := logsRun(t, env, append([]string{"--archive", "--request-id", "nobody"}, day...)...); code != 1 {
			t.Errorf("%s: nothing matched: exit %d, want 1", where, code)
		}
	}
}

// sluice logs -f prints an event written after it started, within seconds (the test allows a minute:
// a slow machine must not fail it; it logs the delays it saw), and stops with exit 0 on SIGINT.
func TestLogsFollow(t *testing.T) {
	_, sink, dsn := migratedSink(t)
	write := func(msg string) time.Time {
		e := event.New(event.LevelError, event.KindApp, msg)
		if err := sink.Write(context.Background(), subscribers.NewBatch([]*event.Event{e})); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	write("before the follow")
	cmd := exec.Command(sluiceBin, "logs", "-f", "--json", "--level", "error")
	cmd.Env = append(cleanEnv(), "SLUICE_POSTGRES_DSN="+dsn)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(want string) time.Time {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || !strings.Contains(l, want) {
				t.Fatalf("sluice logs -f printed %q (open %v), want the event %q\nstderr: %s", l, ok, want, stderr.String())
			}
			return time.Now()
		case <-time.After(time.Minute):
			t.Fatalf("sluice logs -f did not print %q within a minute\nstderr: %s", want, stderr.String())
		}
		return time.Time{}
	}
	next("before the follow")
	var delays []time.Duration
	for i := range 5 {
		msg := fmt.Sprintf("new event %d", i)
		written := write(msg)
		delays = append(delays, next(msg).Sub(written))
	}
	slices.Sort(delays)
	t.Logf("sluice logs -f printed a new event %v after its write commits (sorted; median %v)", delays, delays[len(delays)/2])
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines { // until stdout closes
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("sluice logs -f after SIGINT: %v, want exit 0\nstderr: %s", err, stderr.String())
	}
}
