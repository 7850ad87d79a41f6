package pgsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// tableReader reads back the event ids that application_logs holds.
type tableReader struct{ pool *pgxpool.Pool }

func (r tableReader) EventIDs(ctx context.Context) (map[uuid.UUID]int, error) {
	rows, err := r.pool.Query(ctx, "SELECT id, count(*) FROM application_logs GROUP BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ids := map[uuid.UUID]int{}
	for rows.Next() {
		var (
			id uuid.UUID
			n  int
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		ids[id] = n
	}
	return ids, rows.Err()
}

// DeadLetters reads back application_logs_dead_letter.
func (r tableReader) DeadLetters(ctx context.Context) ([]subscribers.DeadLetter, error) {
	rows, err := r.pool.Query(ctx, `SELECT id, batch_id, route, reason, coalesce(detail, ''), raw, failed_at
		FROM application_logs_dead_letter ORDER BY dead_letter_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []subscribers.DeadLetter
	for rows.Next() {
		var (
			l           subscribers.DeadLetter
			id, batchID *uuid.UUID
		)
		if err := rows.Scan(&id, &batchID, &l.Route, &l.Reason, &l.Detail, &l.Raw, &l.FailedAt); err != nil {
			return nil, err
		}
		if id != nil {
			l.ID = *id
		}
		if batchID != nil {
			l.BatchID = *batchID
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// newSink returns a sink writing through pool, closed when the test ends.
func newSink(t *testing.T, pool *pgxpool.Pool, cfg pgsink.Config) *pgsink.Sink {
	t.Helper()
	s, err := pgsink.New(pool, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (subscribers.Sink, sinktest.Reader) {
		pool := migratedPool(t)
		return newSink(t, pool, pgsink.Config{}), tableReader{pool}
	})
}

func TestMigrate(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t)

	status, err := pgsink.MigrationStatus(ctx, pool)
	if err != nil {
		t.Fatalf("MigrationStatus before Migrate: %v", err)
	}
	for _, m := range status {
		if m.Applied() {
			t.Errorf("fresh database has %s applied", m.Name)
		}
	}

	applied, err := pgsink.Migrate(ctx, pool)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if len(applied) != len(status) || applied[0] != "0001_application_logs.sql" {
		t.Errorf("Migrate applied %v, want all %d migrations from 0001_application_logs.sql", applied, len(status))
	}
	again, err := pgsink.Migrate(ctx, pool)
	if err != nil || len(again) != 0 {
		t.Errorf("second Migrate applied %v, %v; want nothing", again, err)
	}

	var (
		version int
		name    string
		at      time.Time
	)
	err = pool.QueryRow(ctx, "SELECT version, name, applied_at FROM sluice_schema_migrations WHERE version = 1").
		Scan(&version, &name, &at)
	if err != nil || name != "0001_application_logs.sql" || time.Since(at) > time.Minute {
		t.Errorf("sluice_schema_migrations row 1 = %d %q %v, %v", version, name, at, err)
	}
	status, err = pgsink.MigrationStatus(ctx, pool)
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for _, m := range status {
		if !m.Applied() {
			t.Errorf("%s not applied after Migrate", m.Name)
		}
	}
	for _, table := range []string{"application_logs", "application_logs_dead_letter"} {
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil || !exists {
			t.Errorf("table %s missing after Migrate (%v)", table, err)
		}
	}
}

// Processes starting together must apply each migration once and all succeed.
func TestMigrateConcurrently(t *testing.T) {
	ctx := t.Context()
	dsnPool := newPool(t)
	const processes = 4
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total []string
		errs  []error
	)
	for range processes {
		wg.Go(func() {
			// One pool per "process", as separate processes would have.
			pool, err := pgxpool.NewWithConfig(ctx, dsnPool.Config())
			if err == nil {
				defer pool.Close()
				var applied []string
				applied, err = pgsink.Migrate(ctx, pool)
				mu.Lock()
				total = append(total, applied...)
				mu.Unlock()
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	status, _ := pgsink.MigrationStatus(ctx, dsnPool)
	if len(total) != len(status) {
		t.Errorf("%d processes applied %v together, want each of the %d migrations once", processes, total, len(status))
	}
}

// One HTTP event and one app event read back column by column.
func TestStoredRow(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})

	rnd := rand.New(rand.NewPCG(1, 2))
	ts := time.Date(2025, 6, 1, 12, 30, 45, 123456000, time.UTC)
	httpEvent := sinktest.HTTPEvent(rnd, ts)
	httpEvent.Status = 503
	httpEvent.Error = "upstream timeout"
	httpEvent.Attrs = map[string]any{"tenant": "acme", "retry": float64(2)}
	appEvent := sinktest.AppEvent(rnd, ts.Add(time.Second))
	if err := s.Write(ctx, subscribers.NewBatch([]*event.Event{httpEvent, appEvent})); err != nil {
		t.Fatalf("Write: %v", err)
	}

	for _, want := range []*event.Event{httpEvent, appEvent} {
		got, insertedAt := readEvent(t, pool, want.ID)
		if time.Since(insertedAt) > time.Minute {
			t.Errorf("inserted_at = %v, want about now", insertedAt)
		}
		if !got.TS.Equal(want.TS) {
			t.Errorf("%s: ts = %v, want %v", want.Kind, got.TS, want.TS)
		}
		got.TS = want.TS
		if g, w := jsonValue(t, got), jsonValue(t, want); !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			t.Errorf("%s event read back differs:\n got %s\nwant %s", want.Kind, gj, wj)
		}
	}
}

// readEvent reads an event back from application_logs, every column into its field.
func readEvent(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) (*event.Event, time.Time) {
	t.Helper()
	var (
		e                                                        event.Event
		level, kind                                              string
		service, requestID, traceID, spanID, method, route, path *string
		clientIP, userAgent, errText, source                     *string
		status                                                   *int
		duration                                                 *float64
		bytesIn, bytesOut                                        *int64
		request, response, attrs                                 []byte
		insertedAt                                               time.Time
	)
	err := pool.QueryRow(t.Context(), `SELECT id, ts, level, kind, message, service, request_id, trace_id,
		span_id, method, route, path, status, duration_ms, client_ip, user_agent, bytes_in, bytes_out, error,
		source, request, response, attrs, inserted_at FROM application_logs WHERE id = $1`, id).Scan(
		&e.ID, &e.TS, &level, &kind, &e.Message, &service, &requestID, &traceID, &spanID, &method, &route,
		&path, &status, &duration, &clientIP, &userAgent, &bytesIn, &bytesOut, &errText, &source,
		&request, &response, &attrs, &insertedAt)
	if err != nil {
		t.Fatalf("read event %s: %v", id, err)
	}
	e.Level, e.Kind = event.Level(level), event.Kind(kind)
	for dst, src := range map[*string]*string{&e.Service: service, &e.RequestID: requestID, &e.TraceID: traceID,
		&e.SpanID: spanID, &e.Method: method, &e.Route: route, &e.Path: path, &e.ClientIP: clientIP,
		&e.UserAgent: userAgent, &e.Error: errText, &e.Source: source} {
		if src != nil {
			*dst = *src
		}
	}
	if status != nil {
		e.Status = *status
	}
	if duration != nil {
		e.DurationMS = *duration
	}
	if bytesIn != nil {
		e.BytesIn = *bytesIn
	}
	if bytesOut != nil {
		e.BytesOut = *bytesOut
	}
	for dst, src := range map[any][]byte{&e.Request: request, &e.Response: response, &e.Attrs: attrs} {
		if src != nil {
			if err := json.Unmarshal(src, dst); err != nil {
				t.Fatalf("event %s: jsonb %s: %v", id, src, err)
			}
		}
	}
	return &e, insertedAt
}

// jsonValue is an event as generic JSON, so that events compare whatever their key order and spacing.
func jsonValue(t *testing.T, e *event.Event) any {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// What PostgreSQL would refuse is stored with U+FFFD in its place; the rest of the event is intact.
func TestUnsafeEventStoredCleaned(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	e := sinktest.UnsafeEvent(time.Now())
	if err := s.Write(ctx, subscribers.NewBatch([]*event.Event{e})); err != nil {
		t.Fatalf("Write: %v", err)
	}
	const r = "\uFFFD"
	for _, c := range []struct{ sql, want string }{
		{"message", "boom a" + r + "b" + r + r + "c"}, // one U+FFFD per invalid byte, everywhere
		{"request_id", "req-a" + r + "b" + r + r + "c"},
		{"path", "/upload/" + r + r},
		{"user_agent", "agent" + r + r + r},
		{"error", "failed: a" + r + "b" + r + r + "c"},
		{"request->>'query'", "q=a" + r + "b" + r + r + "c"}, // encoding/json replaces each invalid byte
		{"request->'headers'->'X-Bada" + r + "b" + r + r + "c'->>0", "va" + r + "b" + r + r + "c"},
		{"request->'body'->>'text'", "body a" + r + "b" + r + r + "c"},
		{"response->'body'->'json'->>'nul'", "x" + r + "y"},
		{"response->'body'->'json'->>'lone'", r},
		{"response->'body'->'json'->>'plain'", `\u0000`},
		{"response->'body'->'json'->>'ok'", "😀"},
		{"attrs->>'keya" + r + "b" + r + r + "c'", "value a" + r + "b" + r + r + "c"},
		{"attrs->'nested'->>'n'", r},
	} {
		var got *string
		if err := pool.QueryRow(ctx, "SELECT "+c.sql+" FROM application_logs WHERE id = $1", e.ID).Scan(&got); err != nil {
			t.Fatalf("SELECT %s: %v", c.sql, err)
		}
		if got == nil || *got != c.want {
			t.Errorf("%s = %q, want %q", c.sql, deref(got), c.want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<NULL>"
	}
	return *s
}

// Events that can never be stored make Write fail permanently before anything is sent, naming them;
// the batch without them is written.
func TestInvalidEventsArePermanent(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	good := sinktest.Events(5, time.Now())
	badLevel := sinktest.Events(1, time.Now())[0]
	badLevel.Level = "TRACE"
	noID := sinktest.Events(1, time.Now())[0]
	noID.ID = uuid.Nil
	farFuture := sinktest.Events(1, time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC))[0]
	batch := append([]*event.Event{badLevel, nil, noID, farFuture}, good...)

	for range 2 { // the same batch again fails the same way
		err := s.Write(ctx, subscribers.Batch{ID: uuid.New(), Events: batch}) // NewBatch does not take nil events
		if !errors.Is(err, pgsink.ErrInvalidEvent) || !subscribers.IsPermanent(err) {
			t.Fatalf("Write = %v, want a permanent ErrInvalidEvent", err)
		}
		for _, want := range []string{"TRACE", "4 of 9 events", "none written", "event 1 is nil", "timestamptz range"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if ids, err := (tableReader{pool}).EventIDs(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("%d rows stored (%v), want none", len(ids), err)
		}
	}
	if err := s.Write(ctx, subscribers.NewBatch(good)); err != nil {
		t.Fatalf("Write of the valid events: %v", err)
	}
	ids, err := tableReader{pool}.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range good {
		if ids[e.ID] != 1 {
			t.Errorf("good event %s stored %d times, want 1", e.ID, ids[e.ID])
		}
	}
	if len(ids) != len(good) {
		t.Errorf("%d rows, want %d", len(ids), len(good))
	}
}

// Errors from PostgreSQL keep their SQLSTATE for whoever classifies them.
func TestWriteErrorWrapsPgError(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{Table: "public.no_such_table"})
	err := s.Write(t.Context(), subscribers.NewBatch(sinktest.Events(3, time.Now())))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("Write = %v, want a *pgconn.PgError with SQLSTATE 42P01 (undefined_table)", err)
	}
	if subscribers.IsPermanent(err) {
		t.Errorf("Write to a missing table = %v: permanent, want transient (a configuration error)", err)
	}
	if !strings.Contains(err.Error(), "public.no_such_table") {
		t.Errorf("error %q does not name the table", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg     pgsink.Config
		wantErr string // "" for valid
	}{
		{pgsink.Config{}, ""},
		{pgsink.DefaultConfig(), ""},
		{pgsink.Config{Table: "logs.application_logs", WriteTimeout: time.Second}, ""},
		{pgsink.Config{Table: "_t1"}, ""},
		{pgsink.Config{Table: "application logs"}, "`table` (\"application logs\")"},
		{pgsink.Config{Table: "logs; DROP TABLE x"}, "`table`"},
		{pgsink.Config{Table: "a.b.c"}, "`table`"},
		{pgsink.Config{Table: "1logs"}, "`table`"},
		{pgsink.Config{Table: strings.Repeat("t", 64)}, "`table`"},
		{pgsink.Config{WriteTimeout: -time.Second}, "`write_timeout` (-1s)"},
		{pgsink.Config{DeadLetterTable: "logs.dead_letters"}, ""},
		{pgsink.Config{DeadLetterTable: "dead letters"}, "`dead_letter_table` (\"dead letters\")"},
	} {
		err := c.cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%+v: Validate = %v, want nil", c.cfg, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%+v: Validate = %v, want an error containing %s", c.cfg, err, c.wantErr)
		}
	}
	d := pgsink.DefaultConfig()
	if d.Table != "application_logs" || d.DeadLetterTable != "application_logs_dead_letter" || d.WriteTimeout != 10*time.Second {
		t.Errorf("DefaultConfig = %+v", d)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := pgsink.New(&pgxpool.Pool{}, pgsink.Config{Table: "no good"})
	if err == nil || !strings.Contains(err.Error(), "invalid config") || !strings.Contains(err.Error(), "`table`") {
		t.Errorf("New = %v, want an invalid config error naming `table`", err)
	}
}

// A sink made with New leaves its pool open; one made with Open closes its own.
func TestCloseAndPoolOwnership(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Errorf("pool given to New is unusable after Close: %v", err)
	}
	if err := s.Write(ctx, subscribers.NewBatch(sinktest.Events(1, time.Now()))); !errors.Is(err, pgsink.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}

	owned, err := pgsink.Open(ctx, pool.Config().ConnString(), pgsink.Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	events := sinktest.Events(10, time.Now())
	if err := owned.Write(ctx, subscribers.NewBatch(events)); err != nil {
		t.Fatalf("Write through Open's pool: %v", err)
	}
	if err := owned.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	if _, err := pgsink.Open(ctx, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", pgsink.Config{}); err == nil {
		t.Error("Open of an unreachable server succeeded")
	}
}

func TestWriteTimeout(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{WriteTimeout: time.Nanosecond})
	err := s.Write(t.Context(), subscribers.NewBatch(sinktest.Events(10, time.Now())))
	if !errors.Is(err, context.DeadlineExceeded) || subscribers.IsPermanent(err) {
		t.Fatalf("Write with a 1ns WriteTimeout = %v, want a transient context.DeadlineExceeded", err)
	}
}

// A batch that overlaps one already stored (some events there, some new) takes the idempotent path
// after its optimistic COPY meets the stored ids: the new events are written, the others not again.
func TestWriteOverlappingBatchStoresOnlyTheNewEvents(t *testing.T) {
	pool := migratedPool(t)
	sink := newSink(t, pool, pgsink.Config{})
	ctx := context.Background()
	events := sinktest.Events(15, time.Now().UTC())
	if err := sink.Write(ctx, subscribers.NewBatch(events[:10])); err != nil {
		t.Fatal(err)
	}
	if err := sink.Write(ctx, subscribers.NewBatch(events[5:])); err != nil {
		t.Fatalf("overlapping batch: %v", err)
	}
	ids, err := tableReader{pool}.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 15 {
		t.Fatalf("%d distinct events stored, want 15", len(ids))
	}
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("event %s stored %d times", id, n)
		}
	}
}
