package pgsink_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/pgsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

func countDeadLetters(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM application_logs_dead_letter").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Each column as stored: raw byte for byte, text cleaned, NULL for nil ids, the raw digest computed.
func TestWriteDeadLettersColumns(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	at := time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)
	letters := sinktest.UnsafeDeadLetters(at)
	letters[1].Route = "ro\x00ute\xff" // text: cleaned
	if err := s.WriteDeadLetters(ctx, letters); err != nil {
		t.Fatalf("WriteDeadLetters: %v", err)
	}
	rows, err := pool.Query(ctx, `SELECT id, batch_id, route, reason, detail, raw, raw_sha256, failed_at
		FROM application_logs_dead_letter ORDER BY dead_letter_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var (
			id, batchID   *uuid.UUID
			route, reason string
			detail        *string
			raw, digest   []byte
			failedAt      time.Time
		)
		if err := rows.Scan(&id, &batchID, &route, &reason, &detail, &raw, &digest, &failedAt); err != nil {
			t.Fatal(err)
		}
		w := letters[i]
		if (id == nil) != (w.ID == uuid.Nil) || id != nil && *id != w.ID {
			t.Errorf("row %d: id %v, want %s (NULL for uuid.Nil)", i, id, w.ID)
		}
		if (batchID == nil) != (w.BatchID == uuid.Nil) || batchID != nil && *batchID != w.BatchID {
			t.Errorf("row %d: batch_id %v, want %s (NULL for uuid.Nil)", i, batchID, w.BatchID)
		}
		if !bytes.Equal(raw, w.Raw) {
			t.Errorf("row %d: raw of %d bytes, want the %d bytes written", i, len(raw), len(w.Raw))
		}
		if sum := sha256.Sum256(w.Raw); !bytes.Equal(digest, sum[:]) {
			t.Errorf("row %d: raw_sha256 %x, want %x", i, digest, sum)
		}
		if reason != w.Reason || !failedAt.Equal(w.FailedAt) {
			t.Errorf("row %d: reason %q, failed_at %v; want %q, %v", i, reason, failedAt, w.Reason, w.FailedAt)
		}
		for _, text := range []string{route, deref(detail)} {
			if !utf8.ValidString(text) || strings.ContainsRune(text, 0) {
				t.Errorf("row %d: text %q has NUL or invalid UTF-8", i, text)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(letters) {
		t.Fatalf("%d rows, want %d", i, len(letters))
	}
	var route string
	if err := pool.QueryRow(ctx, "SELECT route FROM application_logs_dead_letter WHERE reason = $1 AND id IS NULL "+
		"ORDER BY dead_letter_id LIMIT 1", subscribers.ReasonDecodeError).Scan(&route); err != nil || route != "ro\uFFFDute\uFFFD" {
		t.Errorf("cleaned route = %q, %v", route, err)
	}
}

// A dead letter is stored once per route and reason, whatever its batch and time; the same event for
// another reason or route, or another line, is another row.
func TestWriteDeadLettersIdempotent(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	letters := sinktest.UnsafeDeadLetters(time.Now())
	for range 2 {
		if err := s.WriteDeadLetters(ctx, letters); err != nil {
			t.Fatalf("WriteDeadLetters: %v", err)
		}
	}
	// In one call, twice, with other batch ids and times.
	again := append(append([]subscribers.DeadLetter{}, letters...), letters...)
	for i := range again {
		again[i].BatchID, again[i].FailedAt = uuid.New(), time.Now().Add(-time.Duration(i)*time.Hour)
	}
	if err := s.WriteDeadLetters(ctx, again); err != nil {
		t.Fatalf("WriteDeadLetters with duplicates: %v", err)
	}
	if n := countDeadLetters(t, pool); n != len(letters) {
		t.Fatalf("%d rows after writing the same %d letters again, want %d", n, len(letters), len(letters))
	}

	otherReason, otherRoute, otherLine := letters[0], letters[1], letters[1]
	otherReason.Reason = subscribers.ReasonOversize
	otherRoute.Route = "archive"
	otherLine.Raw = append([]byte("x"), otherLine.Raw...)
	if err := s.WriteDeadLetters(ctx, []subscribers.DeadLetter{otherReason, otherRoute, otherLine}); err != nil {
		t.Fatal(err)
	}
	if n := countDeadLetters(t, pool); n != len(letters)+3 {
		t.Fatalf("%d rows, want %d", n, len(letters)+3)
	}
}

// A 10 MB line, a letter without a time and one with a time PostgreSQL cannot hold.
func TestWriteDeadLettersLargeAndOddTimes(t *testing.T) {
	ctx := t.Context()
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	big := bytes.Repeat([]byte("\x00\xffbig"), 10<<20/5)
	before := time.Now()
	letters := []subscribers.DeadLetter{
		{ID: uuid.New(), Reason: subscribers.ReasonOversize, Raw: big},
		{Reason: subscribers.ReasonDecodeError, Raw: []byte("x"), FailedAt: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	if err := s.WriteDeadLetters(ctx, letters); err != nil {
		t.Fatalf("WriteDeadLetters: %v", err)
	}
	var (
		size    int
		oldest  time.Time
		newest  time.Time
		matches bool
	)
	err := pool.QueryRow(ctx, `SELECT max(length(raw)), min(failed_at), max(failed_at), bool_or(raw = $1)
		FROM application_logs_dead_letter`, big).Scan(&size, &oldest, &newest, &matches)
	if err != nil {
		t.Fatal(err)
	}
	if size != len(big) || !matches {
		t.Errorf("largest raw %d bytes (equal: %v), want the %d bytes written", size, matches, len(big))
	}
	if oldest.Before(before.Add(-time.Minute)) || newest.After(time.Now().Add(time.Minute)) {
		t.Errorf("failed_at between %v and %v, want the server's now", oldest, newest)
	}
}

func TestWriteDeadLettersClosedAndEmpty(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{})
	if err := s.WriteDeadLetters(t.Context(), nil); err != nil {
		t.Errorf("WriteDeadLetters(nil) = %v", err)
	}
	_ = s.Close()
	if err := s.WriteDeadLetters(t.Context(), sinktest.UnsafeDeadLetters(time.Now())); !errors.Is(err, pgsink.ErrClosed) {
		t.Errorf("WriteDeadLetters after Close = %v, want ErrClosed", err)
	}
}

// A sink whose dead-letter table is missing fails transiently (a configuration error).
func TestWriteDeadLettersMissingTable(t *testing.T) {
	pool := migratedPool(t)
	s := newSink(t, pool, pgsink.Config{DeadLetterTable: "no_such_table"})
	err := s.WriteDeadLetters(t.Context(), sinktest.UnsafeDeadLetters(time.Now()))
	if err == nil || subscribers.IsPermanent(err) || !strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("WriteDeadLetters to a missing table = %v, want a transient error naming it", err)
	}
}
