package pgsink

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicelog/sluice/subscribers"
)

// Classify returns err marked subscribers.Permanent when it is the data's fault, so that the batcher
// splits the batch to find the bad events and dead-letters them, and err unchanged otherwise: the batch
// is retried and the failure counts towards the route's circuit breaker. nil stays nil.
//
// It decides from the SQLSTATE of a *pgconn.PgError (errors.As), never from error text:
//
//   - permanent, the data is bad: class 22 (data exception: 22003 numeric value out of range, 22P02
//     invalid text representation, 22021 invalid byte sequence, 22P05 untranslatable character, 2200N
//     invalid XML, 22007/22008 bad or out-of-range datetime, ...), class 23 (integrity constraint
//     violation: check, not-null, unique on a key other than id), 40002 (a deferred integrity
//     constraint at commit), 54000 (program limit exceeded: a row or index entry too large) and 54001
//     (statement too complex: a document nested too deep). Splitting the batch converges: each of
//     these fails because of one row, and a half without that row succeeds.
//   - transient, everything else, and in particular: class 08 (connection exception), class 40 but
//     40002 (serialization failure, deadlock), class 53 (insufficient resources: disk full, out of
//     memory, too many connections), class 55 (lock not available, object in use), class 57
//     (operator intervention: statement timeout, admin or crash shutdown, cannot connect now), class
//     58 and XX (system and internal errors), context cancellation and deadlines, network errors, and
//     any error that is not a *pgconn.PgError.
//   - transient although no retry fixes it: class 42 (syntax error or access rule violation:
//     42P01 undefined table, 42703 undefined column, 42501 insufficient privilege), 3D000 (no such
//     database), 28 (invalid authorization). They are the configuration's fault or the schema's (a
//     migration not applied), not the data's: every batch fails alike, so dead-lettering would turn
//     all traffic into dead letters. Transient, they open the route's breaker instead, /readyz shows
//     it, and writing resumes once the schema or the configuration is fixed.
//
// An unknown SQLSTATE is transient: the breaker stops a route that fails over and over, while a wrong
// "permanent" would dead-letter good events.
func Classify(err error) error {
	if err == nil || subscribers.IsPermanent(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && permanentSQLState(pgErr.Code) {
		return subscribers.Permanent(err)
	}
	return err
}

// permanentSQLState reports whether a SQLSTATE says that the data, not the server nor the
// configuration, made the statement fail.
func permanentSQLState(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "22", "23": // data exception, integrity constraint violation
		return true
	}
	switch code {
	case "40002", // transaction_integrity_constraint_violation (deferred constraint)
		"54000", // program_limit_exceeded: row too big, index row size exceeds maximum
		"54001": // statement_too_complex: stack depth limit exceeded (deeply nested jsonb)
		return true
	}
	return false
}
