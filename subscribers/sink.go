// Package subscribers owns the consuming side of sluice: the Sink contract that every store implements,
// the BatchSubscriber that gathers bus messages (chunks of events) into write batches and
// acknowledges the chunks only once their batch is durably written, and the Writer, the Watermill
// handler that writes one batch to a sink and sets aside what the sink cannot store as dead letters.
//
// It also owns the retention seam (Pruner, PruneLocker) that a store implements to be pruned by the
// pipeline and by `sluice prune`.
//
// Stores live in sub-packages (pgsink for PostgreSQL, blobsink for Azure Blob Storage and a local
// directory); sinktest is the one conformance suite they all pass. This package must not import the
// publishers package nor the root sluice package.
package subscribers

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
)

// Batch is a group of events written to a sink in one call.
type Batch struct {
	// ID names the batch in every store; it is fixed before the first attempt and derived from the
	// events (event.BatchID), so a retry or a replay of the same events reuses it.
	ID     uuid.UUID
	Events []*event.Event
}

// NewBatch returns a batch of events with its id derived from them.
func NewBatch(events []*event.Event) Batch {
	return Batch{ID: event.BatchID(events), Events: events}
}

// ErrInvalidEvent marks an event that a sink cannot store whatever the retries: nil, or refused by the
// sink's own checks. An error that wraps it is permanent: the Writer splits the batch down to the
// event and dead-letters it. The ErrInvalidEvent of each sink package is this error.
var ErrInvalidEvent = errors.New("invalid event")

// Check is the check every sink makes of a batch before it writes: an empty batch needs no write
// (empty is true, and Write returns nil), and a nil event is one that no sink can store: err is then
// permanent, wraps ErrInvalidEvent and names the sink, the batch and the event's place in it.
func (b Batch) Check(sink string) (empty bool, err error) {
	for i, e := range b.Events {
		if e == nil {
			return false, Permanent(fmt.Errorf("%s: batch %s: %w: event %d is nil", sink, b.ID, ErrInvalidEvent, i))
		}
	}
	return len(b.Events) == 0, nil
}

// Sink is a store that events are written to in batches.
//
// Write must be idempotent: writing the same batch (same ID, same events) twice leaves every event
// stored once. It returns nil only when every event of the batch is durably stored. It must honour ctx
// (deadline and cancellation). It may be called from several goroutines at once.
type Sink interface {
	// Name is the sink's short name, used in metrics labels and logs ("postgres", "blob").
	Name() string
	Write(ctx context.Context, b Batch) error
	// Close releases the sink's resources. Writes after Close fail.
	Close() error
}

// Verifier is implemented by sinks that can tell whether a batch is stored. The Writer asks it when a
// write ended with its context (cut at a shutdown deadline, or past its write timeout) without an
// answer from the store: a store may have stored the batch all the same, and the shutdown count is
// exact only if such a batch is counted as written.
type Verifier interface {
	// Stored reports whether every event of the batch is stored. It must honour ctx.
	Stored(ctx context.Context, b Batch) (bool, error)
}
