package subscribers

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// PermanentError marks a write error that no retry can fix because the data is bad (invalid
// encoding, a constraint or type error, an event too large): the batcher splits the batch to find
// the bad events and dead-letters them. Every other error is transient: the batch is retried, and
// its failures count towards the route's circuit breaker.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or an error it wraps) was marked permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Dead-letter reasons: the label of sluice_dead_letters_total and the reason column of the
// dead-letter table.
const (
	ReasonDecodeError = "decode_error" // the line is not a valid event (bad JSON, timestamp, level, kind)
	ReasonOversize    = "oversize"     // the event is larger than the route's max event size
	ReasonInvalidData = "invalid_data" // the sink refused the event permanently (encoding, type, constraint)
)

// DeadLetter is one event, or one line that is not an event, that could not be stored and is kept
// aside with the reason.
type DeadLetter struct {
	ID       uuid.UUID // the event's id; uuid.Nil when the line could not be decoded
	BatchID  uuid.UUID // the batch it was part of (uuid.Nil when none was formed)
	Route    string
	Reason   string // one of the Reason constants
	Detail   string // the error text
	Raw      []byte // the event's line (event.Raw: storable), or the line as received when it is not an event
	FailedAt time.Time
}

// DeadLetterSink is a sink that can keep dead letters (pgsink: the application_logs_dead_letter
// table; blobsink: blobs under the dead-letter/ prefix). WriteDeadLetters must be idempotent by
// (ID, or Raw when ID is nil) like Write, and must accept any bytes in Raw and Detail.
type DeadLetterSink interface {
	WriteDeadLetters(ctx context.Context, letters []DeadLetter) error
}
