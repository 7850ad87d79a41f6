package console

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// RememberedBatches is how many batch ids a Sink remembers to skip a batch it has already printed.
// 1024 ids take some 50 KiB; at a batch of 100 events that is the last 100,000 events, far more than
// a retry or a redelivery reaches back.
const RememberedBatches = 1024

// What a Sink keeps from one batch to the next: a line buffer of up to 1 MiB and the ids of up to 4096
// events; a larger one (a batch of large events, a huge batch) is left to the garbage collector.
const (
	keptBuffer = 1 << 20
	keptSeen   = 4096
)

// Sink prints batches of events to a writer, one line per event. It implements subscribers.Sink and is
// safe for concurrent use. It is not a subscribers.Verifier: Write returns a context error only when it
// printed nothing, and otherwise the write call's own result, so no write ends without an answer for a
// Verifier to settle. Nor is it a subscribers.DeadLetterSink: the dead letters of a route that prints
// to the console (lines that are not events, oversize events) are dropped and counted as rejected.
type Sink struct {
	w      io.Writer
	file   *os.File // the target when it is a file the sink opened (Close closes it), else nil
	cfg    Config
	closed atomic.Bool

	// lock serializes batches: a channel of one, so that a Write waiting behind a blocked terminal
	// gives up at its context's end. It guards everything below.
	lock    chan struct{}
	buf     []byte
	seen    map[uuid.UUID]struct{} // the ids of the batch being printed, to print a repeated event once
	printed batchMemory
}

var _ subscribers.Sink = (*Sink)(nil)

func newSink(w io.Writer, file *os.File, cfg Config) *Sink {
	return &Sink{w: w, file: file, cfg: cfg, lock: make(chan struct{}, 1), seen: map[uuid.UUID]struct{}{},
		printed: newBatchMemory(RememberedBatches)}
}

// Name returns "console".
func (s *Sink) Name() string { return "console" }

// Write prints the batch's events, one line each in the configured format, with one write call to the
// target, after the lines of any batch printed before and before those of any printed after. An event
// that appears twice in the batch is printed once; a batch the sink has already printed (one of the
// last RememberedBatches) is skipped and Write returns nil.
//
// A nil event, or one that format "json" cannot encode, fails Write permanently with ErrInvalidEvent
// and nothing of the batch printed: splitting the batch finds the event. A context that ends before the
// write call (while waiting for another batch's write, say) fails Write with its error and nothing
// printed; once the write call is made, Write returns its result. A failed write call may have printed
// part of the batch, which its retry prints again. Write after Close returns ErrClosed.
func (s *Sink) Write(ctx context.Context, b subscribers.Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if empty, err := b.Check("console"); empty || err != nil {
		return err
	}
	id := b.ID
	if id == uuid.Nil { // a batch made by hand; subscribers.NewBatch always sets it
		id = event.BatchID(b.Events)
	}

	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.lock }()
	switch {
	case s.closed.Load():
		return ErrClosed
	case s.printed.has(id):
		return nil
	}
	if err := ctx.Err(); err != nil { // the select takes either case when both are ready
		return err
	}

	buf, err := s.appendBatch(s.buf[:0], b.Events)
	if cap(buf) <= keptBuffer {
		s.buf = buf[:0]
	} else {
		s.buf = nil
	}
	if err != nil {
		return subscribers.Permanent(fmt.Errorf("console: batch %s: %w: %w", b.ID, ErrInvalidEvent, err))
	}
	if _, err := s.w.Write(buf); err != nil {
		return fmt.Errorf("console: write batch %s (%d events) to %s: %w", id, len(b.Events), s.cfg.Target, err)
	}
	s.printed.add(id)
	return nil
}

// appendBatch appends the lines of events to buf, each event once. The caller holds the lock.
func (s *Sink) appendBatch(buf []byte, events []*event.Event) ([]byte, error) {
	clear(s.seen)
	for _, e := range events {
		if _, dup := s.seen[e.ID]; dup {
			continue
		}
		s.seen[e.ID] = struct{}{}
		if s.cfg.Format == FormatText {
			buf = s.appendText(buf, e)
			continue
		}
		var err error
		if buf, err = appendJSONLine(buf, e); err != nil {
			return buf, err
		}
	}
	if len(s.seen) > keptSeen {
		s.seen = map[uuid.UUID]struct{}{}
	}
	return buf, nil
}

// Close makes later writes fail with ErrClosed. A file target is closed once the write in progress, if
// any, is done; stdout, stderr and a writer given to NewWriter stay open. Closing twice is harmless.
func (s *Sink) Close() error {
	if s.closed.Swap(true) || s.file == nil {
		return nil
	}
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	if err := s.file.Close(); err != nil {
		return fmt.Errorf("console: close %s: %w", s.cfg.Target, err)
	}
	return nil
}

// batchMemory remembers the ids of the last batches printed, forgetting the oldest first.
type batchMemory struct {
	ids  map[uuid.UUID]struct{}
	ring []uuid.UUID // the remembered ids in the order printed, from next on (uuid.Nil while unused)
	next int
}

func newBatchMemory(n int) batchMemory {
	return batchMemory{ids: make(map[uuid.UUID]struct{}, n), ring: make([]uuid.UUID, n)}
}

func (m *batchMemory) has(id uuid.UUID) bool {
	_, ok := m.ids[id]
	return ok
}

func (m *batchMemory) add(id uuid.UUID) {
	if m.has(id) {
		return
	}
	if old := m.ring[m.next]; old != uuid.Nil {
		delete(m.ids, old)
	}
	m.ring[m.next] = id
	m.ids[id] = struct{}{}
	m.next = (m.next + 1) % len(m.ring)
}
