package pgsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

func TestClassify(t *testing.T) {
	pg := func(code string) error {
		return fmt.Errorf("pgsink: write batch x: insert from stage: %w", &pgconn.PgError{Code: code, Message: "m"})
	}
	for _, c := range []struct {
		name      string
		err       error
		permanent bool
	}{
		// The data's fault.
		{"22003 numeric value out of range", pg("22003"), true},
		{"22P02 invalid text representation", pg("22P02"), true},
		{"22021 character not in repertoire", pg("22021"), true},
		{"22P05 untranslatable character", pg("22P05"), true},
		{"2200N invalid XML content", pg("2200N"), true},
		{"22008 datetime field overflow", pg("22008"), true},
		{"22001 string data right truncation", pg("22001"), true},
		{"23505 unique violation", pg("23505"), true},
		{"23514 check violation", pg("23514"), true},
		{"23502 not null violation", pg("23502"), true},
		{"40002 integrity constraint at commit", pg("40002"), true},
		{"54000 program limit exceeded", pg("54000"), true},
		{"54001 statement too complex", pg("54001"), true},
		{"already permanent", subscribers.Permanent(errors.New("x")), true},
		// The server's, the network's: retry.
		{"08000 connection exception", pg("08000"), false},
		{"08006 connection failure", pg("08006"), false},
		{"08P01 protocol violation", pg("08P01"), false},
		{"40001 serialization failure", pg("40001"), false},
		{"40P01 deadlock detected", pg("40P01"), false},
		{"53100 disk full", pg("53100"), false},
		{"53200 out of memory", pg("53200"), false},
		{"53300 too many connections", pg("53300"), false},
		{"55P03 lock not available", pg("55P03"), false},
		{"57014 query canceled", pg("57014"), false},
		{"57P01 admin shutdown", pg("57P01"), false},
		{"57P02 crash shutdown", pg("57P02"), false},
		{"57P03 cannot connect now", pg("57P03"), false},
		{"58030 io error", pg("58030"), false},
		{"XX000 internal error", pg("XX000"), false},
		{"25P02 in failed transaction", pg("25P02"), false},
		// The configuration's or the schema's: no retry fixes them, but neither do dead letters.
		{"42P01 undefined table", pg("42P01"), false},
		{"42703 undefined column", pg("42703"), false},
		{"42501 insufficient privilege", pg("42501"), false},
		{"3D000 invalid catalog name", pg("3D000"), false},
		{"28P01 invalid password", pg("28P01"), false},
		{"54011 too many columns", pg("54011"), false},
		{"unknown SQLSTATE", pg("ZZ999"), false},
		{"malformed SQLSTATE", pg("22"), false},
		// Not from the server.
		{"deadline", fmt.Errorf("write: %w", context.DeadlineExceeded), false},
		{"cancelled", fmt.Errorf("write: %w", context.Canceled), false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, false},
		{"connect error", &pgconn.ConnectError{}, false},
		{"closed sink", pgsink.ErrClosed, false},
		{"unknown", errors.New("something"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := pgsink.Classify(c.err)
			if subscribers.IsPermanent(got) != c.permanent {
				t.Errorf("Classify(%v): permanent = %v, want %v", c.err, !c.permanent, c.permanent)
			}
			if !errors.Is(got, c.err) {
				t.Errorf("Classify(%v) = %v, which does not wrap the error", c.err, got)
			}
		})
	}
	if pgsink.Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}

// refusedMessage is the message of the events that refuse installs a real PostgreSQL rule against.
const refusedMessage = "poison: refused by the database"

// refuse installs in the test's own database what a user's own rule would be: a CHECK constraint on
// application_logs that refuses the events whose message is refusedMessage (SQLSTATE 23514,
// check_violation), or, with code, a trigger that raises that SQLSTATE for them. The sink's checks pass
// such an event: only PostgreSQL refuses it, after the sink sent it.
func refuse(t *testing.T, pool *pgxpool.Pool, code string) {
	t.Helper()
	stmts := []string{`ALTER TABLE application_logs ADD CONSTRAINT sluice_test_refused CHECK (message <> '` + refusedMessage + `')`}
	if code != "" {
		stmts = []string{
			`CREATE FUNCTION sluice_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.message = '` + refusedMessage + `' THEN
		RAISE EXCEPTION 'sluice test: event % refused', NEW.id USING ERRCODE = '` + code + `';
	END IF;
	RETURN NEW;
END $$`,
			`CREATE TRIGGER sluice_test_refuse BEFORE INSERT ON application_logs FOR EACH ROW EXECUTE FUNCTION sluice_test_refuse()`,
		}
	}
	for _, stmt := range stmts {
		if _, err := pool.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// refused returns an event that the rule refuse installs refuses.
func refused(ts time.Time) *event.Event {
	e := sinktest.Events(1, ts)[0]
	e.Message = refusedMessage
	return e
}

// A batch with an event that PostgreSQL refuses, real PostgreSQL refusing it with a data error (a
// constraint, or a trigger raising a class 22 SQLSTATE), fails permanently and stores nothing; without
// that event, it is written. The same trigger raising a SQLSTATE that is not the data's fault makes the
// failure transient.
func TestDataErrorIsPermanent(t *testing.T) {
	for _, c := range []struct {
		name, raise, want string // raise "": the CHECK constraint
		permanent         bool
	}{
		{"check constraint", "", "23514", true},
		{"trigger raising data_exception", "22023", "22023", true},
		{"trigger raising lock_not_available", "55P03", "55P03", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			pool := migratedPool(t)
			refuse(t, pool, c.raise)
			s := newSink(t, pool, pgsink.Config{})
			events := sinktest.Events(20, time.Now())
			withBad := append(append(append([]*event.Event{}, events[:7]...), refused(time.Now())), events[7:]...)

			err := s.Write(ctx, subscribers.NewBatch(withBad))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != c.want || subscribers.IsPermanent(err) != c.permanent {
				t.Fatalf("Write with a refused event = %v, want SQLSTATE %s, permanent %v", err, c.want, c.permanent)
			}
			if ids, err := (tableReader{pool}).EventIDs(ctx); err != nil || len(ids) != 0 {
				t.Fatalf("%d rows stored after the batch failed (%v), want none", len(ids), err)
			}
			if err := s.Write(ctx, subscribers.NewBatch(events)); err != nil {
				t.Fatalf("Write without the bad event: %v", err)
			}
			if ids, err := (tableReader{pool}).EventIDs(ctx); err != nil || len(ids) != len(events) {
				t.Fatalf("%d rows stored (%v), want %d", len(ids), err, len(events))
			}
		})
	}
}

// What the sink once refused, PostgreSQL now stores: a body's number that numeric cannot hold is a
// string by the time it is written (the encoder makes JSON storable, see event.SafeJSON).
func TestNumberNumericCannotHoldIsStored(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	e := sinktest.Events(1, time.Now())[0]
	e.Response = &event.Message{Body: &event.Body{ContentType: "application/json", Size: 15,
		JSON: json.RawMessage(`{"n":1e1000000}`)}}
	if err := s.Write(ctx, subscribers.NewBatch([]*event.Event{e})); err != nil {
		t.Fatalf("Write with a 1e1000000 number: %v", err)
	}
	var n string
	if err := pool.QueryRow(ctx, "SELECT response->'body'->'json'->>'n' FROM application_logs WHERE id = $1", e.ID).Scan(&n); err != nil || n != "1e1000000" {
		t.Fatalf("stored %q (%v), want the number's text", n, err)
	}
}

// A server that does not answer is a transient failure.
func TestUnreachableServerIsTransient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more: connections are refused
	pool, err := pgxpool.New(t.Context(), "postgres://postgres@"+addr+"/postgres?sslmode=disable&connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newSink(t, pool, pgsink.Config{})
	err = s.Write(t.Context(), subscribers.NewBatch(sinktest.Events(3, time.Now())))
	if err == nil || subscribers.IsPermanent(err) {
		t.Fatalf("Write to %s (closed port) = %v, want a transient error", addr, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error does not wrap ECONNREFUSED: %v", err)
	}
	if err := s.WriteDeadLetters(t.Context(), sinktest.UnsafeDeadLetters(time.Now())); err == nil || subscribers.IsPermanent(err) {
		t.Fatalf("WriteDeadLetters to %s (closed port) = %v, want a transient error", addr, err)
	}
}

// bisect writes events the way a batcher that splits permanently failing batches does, and returns
// the events it had to set aside and how many writes it made.
func bisect(t *testing.T, s subscribers.Sink, events []*event.Event) (bad []*event.Event, writes int) {
	t.Helper()
	writes++
	err := s.Write(t.Context(), subscribers.NewBatch(events))
	switch {
	case err == nil:
		return nil, writes
	case !subscribers.IsPermanent(err):
		t.Fatalf("Write of %d events: transient error %v", len(events), err)
	case len(events) == 1:
		return events, writes
	}
	left, n1 := bisect(t, s, events[:len(events)/2])
	right, n2 := bisect(t, s, events[len(events)/2:])
	return append(left, right...), writes + n1 + n2
}

// Splitting a batch on permanent errors isolates exactly the events that cannot be stored, whether the
// sink or PostgreSQL refuses them, and stores every other event once.
func TestBisectionConverges(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	events := sinktest.Events(200, time.Now())
	refuse(t, pool, "")
	want := map[int]bool{3: true, 77: true, 78: true, 150: true}
	for i := range want {
		if i == 77 {
			events[i].Level = "LOUD" // refused by the sink
		} else {
			events[i].Message = refusedMessage // refused by PostgreSQL (a CHECK constraint)
		}
	}
	events[120] = sinktest.UnsafeEvent(events[120].TS) // cleaned, stored
	bad, writes := bisect(t, s, events)
	t.Logf("%d writes for %d events with %d bad", writes, len(events), len(want))
	if len(bad) != len(want) {
		t.Errorf("bisection set aside %d events, want %d", len(bad), len(want))
	}
	for _, b := range bad {
		found := false
		for i := range want {
			found = found || events[i] == b
		}
		if !found {
			t.Errorf("good event %s set aside", b.ID)
		}
	}
	ids, err := tableReader{pool}.EventIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range events {
		if n := ids[e.ID]; n != 1 && !want[i] || n != 0 && want[i] {
			t.Errorf("event %d stored %d times", i, n)
		}
	}
}

// An event with a 10 MB attribute is stored with its batch: it is large, not bad.
func TestTenMegabyteAttribute(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	events := sinktest.Events(10, time.Now())
	events[4].Attrs = map[string]any{"big": strings.Repeat("0123456789", 1<<20)}
	if err := s.Write(ctx, subscribers.NewBatch(events)); err != nil {
		t.Fatalf("Write with a 10 MB attribute: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT length(attrs->>'big') FROM application_logs WHERE id = $1", events[4].ID).Scan(&n); err != nil || n != 10<<20 {
		t.Fatalf("stored attribute of %d characters (%v), want %d", n, err, 10<<20)
	}
}
