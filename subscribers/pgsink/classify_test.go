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

// bigNumber is an event whose response body holds a JSON number that jsonb cannot hold: PostgreSQL
// refuses it with SQLSTATE 22003, after the sink's checks.
func bigNumber(ts time.Time) *event.Event {
	e := sinktest.Events(1, ts)[0]
	e.Response = &event.Message{Body: &event.Body{ContentType: "application/json", Size: 15,
		JSON: json.RawMessage(`{"n":1e1000000}`)}}
	return e
}

// A batch with an event that PostgreSQL refuses fails permanently and stores nothing; without that
// event, it is written.
func TestDataErrorIsPermanent(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	events := sinktest.Events(20, time.Now())
	bad := bigNumber(time.Now())
	withBad := append(append(append([]*event.Event{}, events[:7]...), bad), events[7:]...)

	err := s.Write(ctx, subscribers.NewBatch(withBad))
	var pgErr *pgconn.PgError
	if !subscribers.IsPermanent(err) || !errors.As(err, &pgErr) || pgErr.Code != "22003" {
		t.Fatalf("Write with a 1e1000000 number = %v, want permanent with SQLSTATE 22003", err)
	}
	if ids, err := (tableReader{pool}).EventIDs(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("%d rows stored after a permanent error (%v), want none", len(ids), err)
	}
	if err := s.Write(ctx, subscribers.NewBatch(events)); err != nil {
		t.Fatalf("Write without the bad event: %v", err)
	}
	if ids, err := (tableReader{pool}).EventIDs(ctx); err != nil || len(ids) != len(events) {
		t.Fatalf("%d rows stored (%v), want %d", len(ids), err, len(events))
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
	want := map[int]bool{3: true, 77: true, 78: true, 150: true}
	for i := range want {
		if i == 77 {
			events[i].Level = "LOUD" // refused by the sink
		} else {
			events[i] = bigNumber(events[i].TS) // refused by PostgreSQL
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
