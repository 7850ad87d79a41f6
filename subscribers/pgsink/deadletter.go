package pgsink

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// insertDeadLettersStatement inserts the letters passed as one array per column, in one statement.
// Without a conflict target, ON CONFLICT DO NOTHING skips a row that either unique key of the table
// (migration 0002) already holds, also one inserted earlier by the same statement: (id, route, reason)
// for letters with an event id, (raw_sha256, route, reason) for lines without. A letter without a
// time takes the server's.
func insertDeadLettersStatement(table string) string {
	return "INSERT INTO " + table + ` (id, batch_id, route, reason, detail, raw, failed_at)
SELECT id, batch_id, route, reason, detail, raw, coalesce(failed_at, now())
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::timestamptz[])
	AS l(id, batch_id, route, reason, detail, raw, failed_at)
ON CONFLICT DO NOTHING`
}

// WriteDeadLetters implements subscribers.DeadLetterSink: it stores the letters in the dead-letter table
// (Config.DeadLetterTable), one row each, in one statement. It is idempotent: a letter whose event id
// (or, without one, whose raw bytes) the table already holds for the same route and reason is skipped,
// so a retried call, or the same event dead-lettered again after a redelivery, stores one row.
//
// Raw is kept byte for byte (bytea). Route, Reason and Detail are text: NUL and invalid UTF-8 in them
// become U+FFFD, as in events. A nil ID or BatchID is stored as NULL, and so is an empty Detail; a zero
// FailedAt, or one outside PostgreSQL's range, takes the server's time. Errors are classified like
// Write's (Classify).
func (s *Sink) WriteDeadLetters(ctx context.Context, letters []subscribers.DeadLetter) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(letters) == 0 {
		return nil
	}
	n := len(letters)
	var (
		ids      = make([]pgtype.UUID, n)
		batchIDs = make([]pgtype.UUID, n)
		routes   = make([]string, n)
		reasons  = make([]string, n)
		details  = make([]pgtype.Text, n)
		raws     = make([][]byte, n)
		times    = make([]pgtype.Timestamptz, n)
	)
	for i, l := range letters {
		ids[i] = pgtype.UUID{Bytes: l.ID, Valid: l.ID != uuid.Nil}
		batchIDs[i] = pgtype.UUID{Bytes: l.BatchID, Valid: l.BatchID != uuid.Nil}
		routes[i] = event.SafeString(l.Route)
		reasons[i] = event.SafeString(l.Reason)
		details[i] = pgtype.Text{String: event.SafeString(l.Detail), Valid: l.Detail != ""}
		raws[i] = l.Raw
		if raws[i] == nil {
			raws[i] = []byte{} // raw is NOT NULL: an empty line is still a line
		}
		at := l.FailedAt
		times[i] = pgtype.Timestamptz{Time: at, Valid: !at.IsZero() && !at.Before(minTS) && at.Before(maxTS)}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.insertDeadLetters, ids, batchIDs, routes, reasons, details, raws, times); err != nil {
		return Classify(fmt.Errorf("pgsink: write %d dead letters to %s: %w", n, s.cfg.DeadLetterTable, err))
	}
	return nil
}
