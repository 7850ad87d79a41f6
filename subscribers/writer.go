package subscribers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
)

// Observer is told what a writer does, for metrics. Implementations must be cheap and safe for
// concurrent use.
type Observer interface {
	// BatchWritten reports one write attempt of a batch: its size, how long the sink's Write call
	// took (that call only: the waits before the Writer is called are not the sink's) and its error.
	BatchWritten(route string, events, bytes int, took time.Duration, err error)
	// Retried reports a write attempt of a batch after its first (the router's Retry middleware
	// calling the handler again): one per retry of a batch, whatever its size.
	Retried(route string)
	// DeadLettered reports events set aside as dead letters, by reason (the Reason constants).
	DeadLettered(route, reason string, n int)
	// Rejected reports events that could neither be stored nor kept as dead letters (the sink keeps
	// none), by reason: they are dropped.
	Rejected(route, reason string, n int)
}

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Route names the writer in errors and in what the Observer is told.
	Route string
	// Sink stores the batches; required.
	Sink Sink
	// WriteTimeout bounds each write attempt; zero means only the message's context bounds it.
	WriteTimeout time.Duration
	// Match selects the events of a batch that this route takes; nil takes every event. (In process
	// the publisher has filtered already; over a broker a message may carry events of several
	// routes.)
	Match func(*event.Event) bool
	// DeadLetters keeps what cannot be stored: lines that are not events, events over MaxEventBytes,
	// and events the sink refuses permanently. Nil means they are dropped and counted as Rejected.
	DeadLetters DeadLetterSink
	// MaxEventBytes is the largest encoded event the route stores; larger ones are dead letters
	// (reason "oversize"). Default DefaultMaxEventBytes.
	MaxEventBytes int
	// Observer, when set, is told about writes, retries, dead letters and rejected events.
	Observer Observer
	// VerifyTimeout bounds the look-up that follows a write ended by its context without an answer,
	// when the sink is a Verifier: a batch the store holds all the same counts as written. Default
	// DefaultVerifyTimeout.
	VerifyTimeout time.Duration
}

// DefaultVerifyTimeout is the default of WriterConfig.VerifyTimeout.
const DefaultVerifyTimeout = 300 * time.Millisecond

// DefaultMaxEventBytes is the default of WriterConfig.MaxEventBytes: bodies are capped at 64 KiB
// each by default, so a larger event is a runaway attribute.
const DefaultMaxEventBytes = 1 << 20

// Writer is the Watermill handler (Handle) that writes one batch message (from a BatchSubscriber) to
// a sink. It returns nil only when every event of the batch is durably stored or kept as a dead
// letter, so that the router acknowledges the batch only then; the batch's chunks are acknowledged
// before Handle returns nil (a BatchSubscriber's batch), so that a shutdown's cut (BatchSubscriber.Cut)
// finds every confirmed write acknowledged.
//
// A batch that the sink refuses permanently is split in halves until each refused part is one event:
// every other event is written and the refused ones become dead letters, so one bad event never
// takes its batch with it. A transient failure is returned as it is: the router's Retry middleware
// calls Handle again with the same batch (same id: the sink's write is idempotent), and when the
// retries are spent the batch message is nacked, and the BatchSubscriber hands the same batch out
// again later, in a new message.
type Writer struct {
	cfg WriterConfig
}

// NewWriter returns a Writer, or an error naming what cfg lacks.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Sink == nil {
		return nil, fmt.Errorf("subscribers: invalid config: route %q: Sink is required", cfg.Route)
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	return &Writer{cfg: cfg}, nil
}

// prepared is what a batch message comes to once its dead letters are kept: the batch to write.
type prepared struct {
	batch Batch
}

type preparedKey struct{}

// Handle is the message.NoPublishHandlerFunc of a route: it writes msg's events (Contents) to the
// sink. The first call for a batch sets aside what cannot be stored (lines that are not events,
// events over MaxEventBytes) as dead letters and drops events that appear twice (a redelivered chunk
// racing its original); retries of the same message, and the messages of the same batch handed out
// again by its BatchSubscriber, only write.
func (w *Writer) Handle(msg *message.Message) error {
	g, inBatch := msg.Context().Value(contentsKey{}).(*gathered)
	var p *prepared
	if inBatch {
		g.attempts++
		if g.attempts > 1 && w.cfg.Observer != nil {
			w.cfg.Observer.Retried(w.cfg.Route)
		}
	}
	if v, ok := msg.Context().Value(preparedKey{}).(*prepared); ok {
		p = v
	} else if inBatch && g.prepared != nil {
		p = g.prepared // the batch handed out again: its dead letters are kept already
	} else {
		var err error
		if p, err = w.prepare(msg); err != nil {
			return err // the dead letters were not kept: retried, then offered again
		}
		if inBatch {
			g.prepared = p
		} else {
			msg.SetContext(context.WithValue(msg.Context(), preparedKey{}, p))
		}
	}
	if len(p.batch.Events) > 0 {
		if inBatch {
			g.startWrite()
		}
		ctx := msg.Context()
		err := w.writeOnce(ctx, p.batch)
		if err != nil && w.stored(ctx, p.batch, err) {
			err = nil
		}
		if IsPermanent(err) {
			err = w.isolate(ctx, p.batch.ID, p.batch.Events, err)
		}
		if err != nil {
			return &WriteError{Route: w.cfg.Route, Batch: p.batch.ID, Events: len(p.batch.Events), Err: err}
		}
	}
	if inBatch {
		g.confirm() // its chunks are acknowledged now, not when the router gets to the batch message
	}
	return nil
}

// stored reports, after a write ended by its context (the message's, cut at a shutdown deadline, or
// the write timeout) without an answer, whether the sink holds the batch all the same: a store may
// complete a write whose client gave up. It asks only a Verifier, within VerifyTimeout, on a context of
// its own.
func (w *Writer) stored(ctx context.Context, b Batch, err error) bool {
	v, ok := w.cfg.Sink.(Verifier)
	if !ok || (ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)) {
		return false
	}
	timeout := w.cfg.VerifyTimeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	stored, verr := v.Stored(vctx, b)
	return verr == nil && stored
}

// WriteError is Handle's error when a batch was not written: which batch (its id is the one the sink
// was given), how many events, and why.
type WriteError struct {
	Route  string
	Batch  uuid.UUID
	Events int
	Err    error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("route %s: write batch %s of %d events: %v", e.Route, e.Batch, e.Events, e.Err)
}

// Unwrap returns the cause.
func (e *WriteError) Unwrap() error { return e.Err }

func (w *Writer) prepare(msg *message.Message) (*prepared, error) {
	events, bad := Contents(msg)
	var letters []DeadLetter
	for _, le := range bad {
		letters = append(letters, DeadLetter{Route: w.cfg.Route, Reason: ReasonDecodeError, Detail: le.Error(), Raw: le.Raw})
	}
	p := &prepared{}
	seen := make(map[uuid.UUID]struct{}, len(events))
	keep := make([]*event.Event, 0, len(events))
	for _, e := range events {
		if w.cfg.Match != nil && !w.cfg.Match(e) {
			continue
		}
		if _, dup := seen[e.ID]; dup {
			continue
		}
		seen[e.ID] = struct{}{}
		if len(e.Raw) > w.cfg.MaxEventBytes {
			letters = append(letters, DeadLetter{ID: e.ID, Route: w.cfg.Route, Reason: ReasonOversize,
				Detail: fmt.Sprintf("event of %d bytes is over the route's limit of %d", len(e.Raw), w.cfg.MaxEventBytes), Raw: e.Raw})
			continue
		}
		keep = append(keep, e)
	}
	if err := w.deadLetter(msg.Context(), uuid.Nil, letters); err != nil {
		return nil, err
	}
	if len(keep) > 0 {
		p.batch = NewBatch(keep)
	}
	return p, nil
}

func (w *Writer) writeOnce(ctx context.Context, batch Batch) error {
	bytes := 0
	for _, e := range batch.Events {
		bytes += len(e.Raw) + 1
	}
	if w.cfg.WriteTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.WriteTimeout)
		defer cancel()
	}
	start := time.Now()
	err := w.cfg.Sink.Write(ctx, batch)
	if w.cfg.Observer != nil {
		w.cfg.Observer.BatchWritten(w.cfg.Route, len(batch.Events), bytes, time.Since(start), err)
	}
	return err
}

// isolate finds the events that the sink refuses permanently by splitting the batch in halves until
// each refused part is one event, writes every other event, and dead-letters the refused ones. It
// returns nil when every event is stored or dead-lettered, and a transient error (the whole batch is
// then retried; what was written is not written twice) otherwise.
func (w *Writer) isolate(ctx context.Context, batchID uuid.UUID, events []*event.Event, cause error) error {
	var letters []DeadLetter
	var split func(part []*event.Event, err error) error
	split = func(part []*event.Event, err error) error {
		if len(part) == 1 {
			letters = append(letters, DeadLetter{ID: part[0].ID, Route: w.cfg.Route, Reason: ReasonInvalidData,
				Detail: err.Error(), Raw: part[0].Raw})
			return nil
		}
		for _, half := range [][]*event.Event{part[:len(part)/2], part[len(part)/2:]} {
			err := w.writeOnce(ctx, NewBatch(half))
			switch {
			case err == nil:
			case IsPermanent(err):
				if err := split(half, err); err != nil {
					return err
				}
			default:
				return err
			}
		}
		return nil
	}
	if err := split(events, cause); err != nil {
		return err
	}
	return w.deadLetter(ctx, batchID, letters)
}

// deadLetter keeps letters in the route's dead-letter sink, or counts them as rejected when there is
// none. An error means they were not kept (the batch is retried, then offered again).
func (w *Writer) deadLetter(ctx context.Context, batchID uuid.UUID, letters []DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	counts := map[string]int{}
	now := time.Now().UTC()
	for i := range letters {
		letters[i].BatchID = batchID
		letters[i].FailedAt = now
		counts[letters[i].Reason]++
	}
	if w.cfg.DeadLetters == nil {
		if w.cfg.Observer != nil {
			for reason, n := range counts {
				w.cfg.Observer.Rejected(w.cfg.Route, reason, n)
			}
		}
		return nil
	}
	if err := w.cfg.DeadLetters.WriteDeadLetters(ctx, letters); err != nil {
		return fmt.Errorf("route %s: keep %d dead letters: %w", w.cfg.Route, len(letters), err)
	}
	if w.cfg.Observer != nil {
		for reason, n := range counts {
			w.cfg.Observer.DeadLettered(w.cfg.Route, reason, n)
		}
	}
	return nil
}
