package logquery_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// t0 is the start of the fixture's first hour.
var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// fixture returns events named for the test, over three hours, in time order.
func fixture() (names []string, events []*event.Event) {
	add := func(name string, at time.Duration, level event.Level, kind event.Kind, msg string, set func(*event.Event)) {
		e := event.New(level, kind, msg)
		e.TS = t0.Add(at)
		e.Service = "shop"
		if set != nil {
			set(e)
		}
		names, events = append(names, name), append(events, e)
	}
	http := func(method, route, path string, status int, rid string) func(*event.Event) {
		return func(e *event.Event) {
			e.Method, e.Route, e.Path, e.Status, e.RequestID, e.DurationMS = method, route, path, status, rid, 1.5
		}
	}
	add("h1", 5*time.Minute, event.LevelInfo, event.KindHTTP, "GET /api/v1/orders/7 200", func(e *event.Event) {
		http("GET", "/api/v1/orders/:id", "/api/v1/orders/7", 200, "r1")(e)
		e.TraceID = "t1"
		e.Request = &event.Message{Query: "expand=items", Headers: map[string][]string{"Accept": {"*/*"}}}
	})
	add("a1", 5*time.Minute+time.Millisecond, event.LevelInfo, event.KindApp, "order shown", func(e *event.Event) {
		e.RequestID, e.TraceID, e.Attrs = "r1", "t1", map[string]any{"order": 7.0, "big": 9007199254740993.0}
	})
	add("h2", 40*time.Minute, event.LevelWarn, event.KindHTTP, "GET /nope 404", http("GET", "", "/nope", 404, "r2"))
	add("h3", 70*time.Minute, event.LevelError, event.KindHTTP, "POST /api/v1/orders 500", func(e *event.Event) {
		http("POST", "/api/v1/orders", "/api/v1/orders", 500, "r3")(e)
		e.TraceID, e.Error = "t3", "db timeout"
	})
	add("a3", 70*time.Minute+2*time.Millisecond, event.LevelError, event.KindApp, "payment failed: timeout", func(e *event.Event) {
		e.RequestID, e.TraceID = "r3", "t3"
	})
	add("h4", 2*time.Hour-time.Millisecond, event.LevelError, event.KindHTTP, "GET /api/v1/orders/8 503",
		http("GET", "/api/v1/orders/:id", "/api/v1/orders/8", 503, "r4"))
	add("a5", 2*time.Hour, event.LevelDebug, event.KindApp, "cache warm", nil)
	add("h6", 150*time.Minute, event.LevelInfo, event.KindHTTP, "GET /100%_done 200", http("GET", "", "/100%_done", 200, "r6"))
	add("h7", 151*time.Minute, event.LevelWarn, event.KindHTTP, "GET /users/1 499", http("GET", "/users/:id", "/users/1", 499, "r 7<&>"))
	return names, events
}

// pgSink returns a pool on a fresh database with the schema, and the PostgreSQL sink writing it.
func pgSink(t *testing.T) (*pgxpool.Pool, *pgsink.Sink) {
	t.Helper()
	pool := testenv.MigratedPostgres(t)
	sink, err := pgsink.New(pool, pgsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return pool, sink
}

// sources writes the fixture through the real PostgreSQL sink and the real archive sink (a local
// directory; the acceptance tests read Azurite), in two batches each, and returns both sources.
func sources(t *testing.T, events []*event.Event) map[string]logquery.Source {
	t.Helper()
	ctx := context.Background()
	pool, pg := pgSink(t)
	store, err := blobsink.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := blobsink.New(store, blobsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Two batches whose events interleave in time: the archive's blobs of an hour are not in order.
	odd, even := []*event.Event{}, []*event.Event{}
	for i, e := range events {
		if i%2 == 0 {
			even = append(even, e)
		} else {
			odd = append(odd, e)
		}
	}
	for _, b := range [][]*event.Event{odd, even} {
		for _, s := range []subscribers.Sink{pg, blob} {
			if err := s.Write(ctx, subscribers.NewBatch(b)); err != nil {
				t.Fatalf("%s: %v", s.Name(), err)
			}
		}
	}
	pgSource, err := logquery.NewPostgres(pool, logquery.PostgresConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// The same rows in a table partitioned by day on ts, as issue 13 makes application_logs: the
	// queries name the table, never a partition.
	for _, stmt := range []string{
		"CREATE TABLE logs_by_day (LIKE application_logs INCLUDING DEFAULTS) PARTITION BY RANGE (ts)",
		"CREATE TABLE logs_by_day_1129 PARTITION OF logs_by_day FOR VALUES FROM ('2026-11-29') TO ('2026-11-30')",
		"CREATE TABLE logs_by_day_1130 PARTITION OF logs_by_day FOR VALUES FROM ('2026-11-30') TO ('2026-12-01')",
		"CREATE TABLE logs_by_day_default PARTITION OF logs_by_day DEFAULT",
		"CREATE INDEX ON logs_by_day (ts)",
		"CREATE INDEX ON logs_by_day (request_id) WHERE request_id IS NOT NULL",
		"CREATE INDEX ON logs_by_day (level, ts)",
		"INSERT INTO logs_by_day SELECT * FROM application_logs",
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	partitioned, err := logquery.NewPostgres(pool, logquery.PostgresConfig{Table: "logs_by_day"})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := logquery.NewArchive(store, logquery.ArchiveConfig{})
	if err != nil {
		t.Fatal(err)
	}
	serial, err := logquery.NewArchive(store, logquery.ArchiveConfig{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]logquery.Source{"postgres": pgSource, "postgres/partitioned": partitioned, "archive": archive, "archive/1": serial}
}

func mustLevels(s string) []event.Level {
	l, err := logquery.ParseLevels(s)
	if err != nil {
		panic(err)
	}
	return l
}

func mustStatus(s string) []logquery.StatusRange {
	r, err := logquery.ParseStatus(s)
	if err != nil {
		panic(err)
	}
	return r
}

// One filter means the same in both sources: every filter hands over exactly the expected events, in
// time order, with the stored fields.
func TestEveryFilterInBothSources(t *testing.T) {
	names, events := fixture()
	byID := map[string]string{}
	for i, e := range events {
		byID[e.ID.String()] = names[i]
	}
	for src, s := range sources(t, events) {
		for _, c := range []struct {
			name string
			f    logquery.Filter
			want []string
			more bool
		}{
			{"everything", logquery.Filter{}, names, false},
			{"request id", logquery.Filter{RequestID: "r1"}, []string{"h1", "a1"}, false},
			{"request id with an app log", logquery.Filter{RequestID: "r3"}, []string{"h3", "a3"}, false},
			{"request id JSON escapes", logquery.Filter{RequestID: "r 7<&>"}, []string{"h7"}, false},
			{"request id nobody has", logquery.Filter{RequestID: "r9"}, nil, false},
			{"trace id", logquery.Filter{TraceID: "t3"}, []string{"h3", "a3"}, false},
			{"level and above", logquery.Filter{Levels: mustLevels("warn")}, []string{"h2", "h3", "a3", "h4", "h7"}, false},
			{"one level", logquery.Filter{Levels: mustLevels("=info")}, []string{"h1", "a1", "h6"}, false},
			{"status class", logquery.Filter{Status: mustStatus("5xx")}, []string{"h3", "h4"}, false},
			{"status list", logquery.Filter{Status: mustStatus("404,499")}, []string{"h2", "h7"}, false},
			{"status range", logquery.Filter{Status: mustStatus("400-499")}, []string{"h2", "h7"}, false},
			{"path glob", logquery.Filter{Path: "/api/*"}, []string{"h1", "h3", "h4"}, false},
			{"path glob one character", logquery.Filter{Path: "/api/v1/orders/?"}, []string{"h1", "h4"}, false},
			{"path with LIKE's characters", logquery.Filter{Path: "/100%_done"}, []string{"h6"}, false},
			{"route", logquery.Filter{Route: "/users/:id"}, []string{"h7"}, false},
			{"grep message and error", logquery.Filter{Grep: "timeout"}, []string{"h3", "a3"}, false},
			{"grep is case-sensitive", logquery.Filter{Grep: "Timeout"}, nil, false},
			{"time range", logquery.Filter{Since: t0.Add(time.Hour), Until: t0.Add(2 * time.Hour)}, []string{"h3", "a3", "h4"}, false},
			{"time range across an hour", logquery.Filter{Since: t0.Add(2*time.Hour - time.Millisecond), Until: t0.Add(2*time.Hour + time.Millisecond)}, []string{"h4", "a5"}, false},
			{"limit: the newest", logquery.Filter{Limit: 2}, []string{"h6", "h7"}, true},
			{"limit with a filter", logquery.Filter{Levels: mustLevels("warn"), Limit: 3}, []string{"a3", "h4", "h7"}, true},
			{"limit of all", logquery.Filter{Limit: len(names)}, names, false},
			{"combined", logquery.Filter{Levels: mustLevels("error"), Path: "/api/*", Status: mustStatus("5xx")}, []string{"h3", "h4"}, false},
		} {
			if c.f.Since.IsZero() {
				c.f.Since = t0 // the archive needs a start
			}
			var got []string
			res, err := s.Query(context.Background(), c.f, func(e *event.Event) error {
				got = append(got, byID[e.ID.String()])
				if i := slices.Index(names, byID[e.ID.String()]); !sameEvent(e, events[i]) {
					t.Errorf("%s, %s: event %s came back as\n%s\nnot\n%s", src, c.name, names[i], e.Raw, mustJSON(events[i]))
				}
				return nil
			})
			if err != nil || !reflect.DeepEqual(got, c.want) || res.More != c.more || res.Events != len(c.want) {
				t.Errorf("%s, %s: %v (more %v, %d events), %v; want %v (more %v)", src, c.name, got, res.More, res.Events, err, c.want, c.more)
			}
		}
	}
}

// sameEvent compares an event read back with the one written, by their JSON encodings decoded.
func sameEvent(got, want *event.Event) bool {
	g, _ := event.Decode(got.Raw)
	w, _ := event.Decode(mustJSON(want))
	if len(g) != 1 || len(w) != 1 {
		return false
	}
	g[0].Raw, w[0].Raw = nil, nil
	return reflect.DeepEqual(g[0], w[0])
}

func mustJSON(e *event.Event) []byte {
	b, err := e.AppendJSON(nil)
	if err != nil {
		panic(err)
	}
	return b
}
