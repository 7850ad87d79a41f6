package subscribers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// recordingSink is a fake store: it records every batch and can be made to fail or to block.
type recordingSink struct {
	mu      sync.Mutex
	batches []subscribers.Batch
	fail    error
	gate    chan struct{} // when set, Write waits for it
	active  atomic.Int32
	maxSeen atomic.Int32
	calls   atomic.Int32
}

func (s *recordingSink) Name() string { return "recording" }
func (s *recordingSink) Close() error { return nil }

func (s *recordingSink) Write(ctx context.Context, b subscribers.Batch) error {
	s.calls.Add(1)
	n := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.maxSeen.Load()
		if n <= m || s.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.batches = append(s.batches, b)
	return nil
}

func (s *recordingSink) sizes() (sizes []int, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.batches {
		sizes = append(sizes, len(b.Events))
		total += len(b.Events)
	}
	return sizes, total
}

// stored returns the events written, in order.
func (s *recordingSink) stored() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*event.Event
	for _, b := range s.batches {
		out = append(out, b.Events...)
	}
	return out
}

// funcSink is a Sink whose Write is a function.
type funcSink func(ctx context.Context, b subscribers.Batch) error

func (f funcSink) Name() string                                         { return "func" }
func (f funcSink) Close() error                                         { return nil }
func (f funcSink) Write(ctx context.Context, b subscribers.Batch) error { return f(ctx, b) }

// letterBox is a DeadLetterSink that records the letters and can be made to fail.
type letterBox struct {
	mu      sync.Mutex
	letters []subscribers.DeadLetter
	fail    error
	calls   int
}

func (l *letterBox) WriteDeadLetters(_ context.Context, letters []subscribers.DeadLetter) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.fail != nil {
		return l.fail
	}
	l.letters = append(l.letters, letters...)
	return nil
}

func (l *letterBox) byReason() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int{}
	for _, d := range l.letters {
		m[d.Reason]++
	}
	return m
}

type countingObserver struct {
	mu       sync.Mutex
	rejected map[string]int // by reason; dead letters as "dead:"+reason
	written  int            // events of successful writes
	attempts int            // BatchWritten calls
	retried  int
}

func (o *countingObserver) BatchWritten(_ string, events, _ int, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempts++
	if err == nil {
		o.written += events
	}
}

func (o *countingObserver) Retried(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retried++
}

func (o *countingObserver) DeadLettered(_, reason string, n int) { o.Rejected("", "dead:"+reason, n) }

func (o *countingObserver) Rejected(_, reason string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rejected == nil {
		o.rejected = map[string]int{}
	}
	o.rejected[reason] += n
}

func (o *countingObserver) retries() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.retried
}

func newWriter(t testing.TB, cfg subscribers.WriterConfig) *subscribers.Writer {
	t.Helper()
	w, err := subscribers.NewWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// gather returns the batch message that a BatchSubscriber makes of exactly these chunks (its
// MaxBytes is their size).
func gather(t testing.TB, chunks ...*message.Message) *message.Message {
	t.Helper()
	size := 0
	for _, c := range chunks {
		size += len(c.Payload)
	}
	sub := newFakeSub(len(chunks))
	s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1 << 30, MaxBytes: int64(size), MaxWait: time.Hour, MaxConcurrentWrites: 1})
	out := subscribe(t, s, "logs")
	sub.put(t, chunks...)
	return receive(t, out)
}

func TestNewWriterRequiresASink(t *testing.T) {
	_, err := subscribers.NewWriter(subscribers.WriterConfig{Route: "pg"})
	if err == nil || !contains(err.Error(), `route "pg"`, "Sink is required") {
		t.Fatalf("err = %v", err)
	}
}

// A batch message is written with one sink call, as one batch whose id is the batch message's.
func TestWriterWritesTheBatchInOneCall(t *testing.T) {
	sink := &recordingSink{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Observer: obs, WriteTimeout: time.Hour})
	var all []*event.Event
	var chunks []*message.Message
	for _, n := range []int{3, 1, 4} {
		evs := events(n, "m")
		all = append(all, evs...)
		chunks = append(chunks, chunk(t, evs...))
	}
	b := gather(t, chunks...)
	if err := w.Handle(b); err != nil {
		t.Fatal(err)
	}
	if len(sink.batches) != 1 {
		t.Fatalf("%d sink writes, want 1", len(sink.batches))
	}
	got := sink.batches[0]
	if !slices.Equal(eventIDs(got.Events), eventIDs(all)) || got.ID.String() != b.UUID || got.ID != event.BatchID(all) {
		t.Fatalf("wrote batch %s of %v, want %s of %v", got.ID, eventIDs(got.Events), b.UUID, eventIDs(all))
	}
	if obs.written != 8 || obs.attempts != 1 || obs.retried != 0 || len(obs.rejected) != 0 {
		t.Errorf("observer: %+v", obs)
	}
}

// WriteTimeout bounds each write attempt.
func TestWriterWriteTimeoutBoundsTheWrite(t *testing.T) {
	var deadline atomic.Bool
	sink := funcSink(func(ctx context.Context, _ subscribers.Batch) error {
		_, ok := ctx.Deadline()
		deadline.Store(ok)
		return nil
	})
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, WriteTimeout: time.Hour})
	if err := w.Handle(chunk(t, events(1, "m")...)); err != nil {
		t.Fatal(err)
	}
	if !deadline.Load() {
		t.Error("the write's context has no deadline")
	}
}

// Port of the old "filters by route and survives bad lines": Match selects the route's events, lines
// that are not events are dead letters (here counted as rejected: no dead-letter sink).
func TestWriterFiltersByRouteAndSurvivesBadLines(t *testing.T) {
	sink := &recordingSink{}
	obs := &countingObserver{}
	warnOrWorse := func(e *event.Event) bool { return e.Level == event.LevelWarn || e.Level == event.LevelError }
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Match: warnOrWorse, Observer: obs})

	info := event.New(event.LevelInfo, event.KindHTTP, "GET /hello 200")
	warn := event.New(event.LevelWarn, event.KindHTTP, "GET /nope 404")
	good, _ := event.Encode(info, warn)
	payload := "{not json\n" + string(good) +
		`{"id":"` + uuid.NewString() + `","ts":"2026-01-01T00:00:00Z","level":"LOUD","kind":"app","message":"x"}` + "\n"
	b := gather(t, rawChunk(payload, 4), chunk(t, event.New(event.LevelDebug, event.KindApp, "skip")))

	if err := w.Handle(b); err != nil {
		t.Fatal(err)
	}
	sizes, total := sink.sizes()
	if total != 1 || sink.batches[0].Events[0].ID != warn.ID {
		t.Fatalf("wrote %v; want only the WARN event", sizes)
	}
	if obs.rejected["decode_error"] != 2 {
		t.Errorf("rejected = %v, want 2 decode errors (bad JSON, unknown level): no dead-letter sink", obs.rejected)
	}
	if obs.written != 1 {
		t.Errorf("observer saw %d written", obs.written)
	}
}

// A batch with no event for the route is acknowledged without a write.
func TestWriterMatchingNothingWritesNothing(t *testing.T) {
	sink := &recordingSink{}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Match: func(*event.Event) bool { return false }})
	if err := w.Handle(gather(t, chunk(t, events(3, "m")...))); err != nil {
		t.Fatal(err)
	}
	if n := sink.calls.Load(); n != 0 {
		t.Fatalf("%d sink writes", n)
	}
}

// Lines that are not events and events over MaxEventBytes are dead letters, with their raw bytes;
// the rest is written.
func TestWriterDeadLettersBadLinesAndOversizeEvents(t *testing.T) {
	sink := &recordingSink{}
	box := &letterBox{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, DeadLetters: box, Observer: obs, MaxEventBytes: 4096})
	big := event.New(event.LevelError, event.KindApp, strings.Repeat("x", 10_000))
	fine := events(2, "fine")
	badLine := `{"id":"` + uuid.NewString() + `","ts":"yesterday","level":"ERROR","kind":"app","message":"m"}`
	b := gather(t, chunk(t, fine[0], big), rawChunk(badLine+"\n", 1), chunk(t, fine[1]))
	if err := w.Handle(b); err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(sink.stored()); !slices.Equal(got, eventIDs(fine)) {
		t.Fatalf("stored %v, want the two fine events", got)
	}
	if r := box.byReason(); r[subscribers.ReasonOversize] != 1 || r[subscribers.ReasonDecodeError] != 1 || len(box.letters) != 2 {
		t.Fatalf("dead letters by reason %v", r)
	}
	for _, l := range box.letters {
		if l.Route != "pg" || l.FailedAt.IsZero() || l.Detail == "" {
			t.Errorf("dead letter lacks its route, time or detail: %+v", l)
		}
		switch l.Reason {
		case subscribers.ReasonOversize:
			if line, _ := event.Encode(big); l.ID != big.ID || !bytes.Equal(l.Raw, line[:len(line)-1]) {
				t.Errorf("oversize letter: id %s, %d bytes", l.ID, len(l.Raw))
			}
		case subscribers.ReasonDecodeError:
			if l.ID != uuid.Nil || string(l.Raw) != badLine {
				t.Errorf("decode error letter: id %s, raw %q", l.ID, l.Raw)
			}
		}
	}
	if obs.rejected["dead:oversize"] != 1 || obs.rejected["dead:decode_error"] != 1 {
		t.Errorf("observer: %v", obs.rejected)
	}
}

// A chunk in a format this sluice cannot read is one decode_error dead letter holding its whole
// payload; the other chunks of its batch are written.
func TestWriterDeadLettersAChunkOfAnUnknownFormat(t *testing.T) {
	sink := &recordingSink{}
	box := &letterBox{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, DeadLetters: box})
	future := chunk(t, events(3, "from the future")...)
	future.Metadata.Set(event.MetadataFormat, "ndjson/9")
	now := events(2, "now")
	b := gather(t, future, chunk(t, now...))
	if err := w.Handle(b); err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(sink.stored()); !slices.Equal(got, eventIDs(now)) {
		t.Fatalf("stored %v, want the events of the readable chunk", got)
	}
	if len(box.letters) != 1 {
		t.Fatalf("%d dead letters, want 1 for the whole unreadable chunk", len(box.letters))
	}
	l := box.letters[0]
	if l.Reason != subscribers.ReasonDecodeError || !bytes.Equal(l.Raw, future.Payload) || !strings.Contains(l.Detail, "ndjson/9") {
		t.Fatalf("letter %+v", l)
	}

	// The same for a message that does not come from a batch subscriber.
	box2 := &letterBox{}
	w2 := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: &recordingSink{}, DeadLetters: box2})
	if err := w2.Handle(future); err != nil {
		t.Fatal(err)
	}
	if len(box2.letters) != 1 || !bytes.Equal(box2.letters[0].Raw, future.Payload) {
		t.Fatalf("letters %+v", box2.letters)
	}
}

// Port of the old "writes duplicate events once": an event that two chunks of a batch carry (a
// redelivered chunk racing its original) is written once.
func TestWriterWritesDuplicateEventsOnce(t *testing.T) {
	sink := &recordingSink{}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink})
	e := event.New(event.LevelInfo, event.KindApp, "m")
	other := event.New(event.LevelInfo, event.KindApp, "other")
	if err := w.Handle(gather(t, chunk(t, e), chunk(t, e, other), chunk(t, e))); err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(sink.stored()); !slices.Equal(got, []uuid.UUID{e.ID, other.ID}) {
		t.Fatalf("stored %v, want each event once", got)
	}
	if sink.batches[0].ID != event.BatchID([]*event.Event{e, other}) {
		t.Error("the batch id is not the id of its events")
	}
}

// poisonSink refuses, permanently, any batch holding an event whose message is "poison", as a
// database refuses a whole COPY for one bad row; it keeps dead letters.
type poisonSink struct {
	recordingSink
	letterBox
	attempts atomic.Int32
}

func (s *poisonSink) Write(ctx context.Context, b subscribers.Batch) error {
	s.attempts.Add(1)
	for _, e := range b.Events {
		if e.Message == "poison" {
			return subscribers.Permanent(fmt.Errorf("event %s: value out of range", e.ID))
		}
	}
	return s.recordingSink.Write(ctx, b)
}

func TestWriterIsolatesPoisonEventsAndWritesTheRest(t *testing.T) {
	sink := &poisonSink{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, DeadLetters: sink, Observer: obs, MaxEventBytes: 4096})
	poison := map[uuid.UUID]bool{}
	var chunks []*message.Message
	for range 10 {
		evs := events(100, "fine")
		for i, e := range evs {
			if (len(chunks)*100+i)%250 == 7 {
				e.Message = "poison"
				poison[e.ID] = true
			}
		}
		chunks = append(chunks, chunk(t, evs...))
	}
	big := event.New(event.LevelError, event.KindApp, strings.Repeat("x", 10_000))
	chunks = append(chunks, chunk(t, big),
		rawChunk(`{"id":"`+uuid.NewString()+`","ts":"yesterday","level":"ERROR","kind":"app","message":"m"}`+"\n", 1))
	b := gather(t, chunks...)
	if err := w.Handle(b); err != nil {
		t.Fatalf("%v (the batch must be acked: every event stored or dead-lettered)", err)
	}
	kept, _ := subscribers.Contents(b)
	kept = slices.DeleteFunc(slices.Clone(kept), func(e *event.Event) bool { return e.ID == big.ID })
	batchID := event.BatchID(kept) // the id of the batch written: the oversize event is not in it
	if _, total := sink.sizes(); total != 1000-len(poison) {
		t.Errorf("stored %d events, want %d", total, 1000-len(poison))
	}
	stored := map[uuid.UUID]bool{}
	for _, e := range sink.stored() {
		if poison[e.ID] || stored[e.ID] {
			t.Fatalf("stored %s twice or a poison event", e.ID)
		}
		stored[e.ID] = true
	}
	for _, l := range sink.letters {
		if l.Reason == subscribers.ReasonInvalidData {
			if !poison[l.ID] {
				t.Errorf("dead-lettered a good event %s", l.ID)
			}
			if l.BatchID != batchID {
				t.Errorf("poison letter of batch %s, want the written batch's id %s", l.BatchID, batchID)
			}
		}
		if len(l.Raw) == 0 || l.FailedAt.IsZero() || l.Route != "pg" {
			t.Errorf("dead letter lacks its raw bytes, time or route: %+v", l)
		}
	}
	reasons := sink.byReason()
	want := map[string]int{subscribers.ReasonInvalidData: len(poison), subscribers.ReasonOversize: 1, subscribers.ReasonDecodeError: 1}
	if !mapsEqual(reasons, want) {
		t.Errorf("dead letters by reason %v, want %v", reasons, want)
	}
	if obs.rejected["dead:invalid_data"] != len(poison) {
		t.Errorf("observer: %v", obs.rejected)
	}
	t.Logf("%d write attempts to isolate %d poison events among 1000", sink.attempts.Load(), len(poison))
	if n := sink.attempts.Load(); n > 100 {
		t.Errorf("%d write attempts: bisection should need about 2*k*log2(n)", n)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Without a dead-letter sink, the poison event is dropped and counted as rejected; the rest is
// written, and the batch acked.
func TestWriterWithoutDeadLetterSinkRejectsPoisonEvents(t *testing.T) {
	sink := &poisonSink{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, Observer: obs})
	evs := events(5, "fine")
	evs[2].Message = "poison"
	if err := w.Handle(gather(t, chunk(t, evs...))); err != nil {
		t.Fatal(err)
	}
	if _, total := sink.sizes(); total != 4 {
		t.Errorf("stored %d, want 4", total)
	}
	if obs.rejected["invalid_data"] != 1 || len(sink.letters) != 0 {
		t.Errorf("rejected %v, letters %d", obs.rejected, len(sink.letters))
	}
}

// Port of the old "transient failure while isolating fails the batch": the first write fails
// permanently, then storage goes down: Handle returns the transient error and dead-letters nothing.
// Retried once storage is back, the batch is written and its poison event dead-lettered once.
func TestWriterTransientFailureWhileIsolatingFailsTheBatch(t *testing.T) {
	sink := &poisonSink{}
	poison := event.New(event.LevelError, event.KindApp, "poison")
	good := event.New(event.LevelError, event.KindApp, "fine")
	var calls atomic.Int32
	down := errors.New("connection reset")
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", DeadLetters: sink, Observer: obs,
		Sink: funcSink(func(ctx context.Context, batch subscribers.Batch) error {
			if n := calls.Add(1); n == 2 {
				return down
			}
			return sink.Write(ctx, batch)
		})})
	b := gather(t, chunk(t, poison), chunk(t, good))
	err := w.Handle(b)
	if !errors.Is(err, down) || subscribers.IsPermanent(err) {
		t.Fatalf("err = %v, want the transient error", err)
	}
	var we *subscribers.WriteError
	if !errors.As(err, &we) || we.Route != "pg" || we.Batch != event.BatchID([]*event.Event{poison, good}) || we.Events != 2 {
		t.Fatalf("err = %#v, want a WriteError naming route pg and the batch of 2 events", err)
	}
	if len(sink.letters) != 0 {
		t.Fatalf("dead-lettered %d events on a transient failure", len(sink.letters))
	}
	if err := w.Handle(b); err != nil { // the router's Retry middleware: the same message again
		t.Fatal(err)
	}
	if got := eventIDs(sink.stored()); !slices.Equal(got, []uuid.UUID{good.ID}) {
		t.Errorf("stored %v, want the good event", got)
	}
	if len(sink.letters) != 1 || sink.letters[0].ID != poison.ID {
		t.Errorf("dead letters %+v, want the poison event once", sink.letters)
	}
	if obs.retries() != 1 {
		t.Errorf("%d retries counted, want 1", obs.retries())
	}
}

// Observer.Retried is told once per call of Handle after the first for the same batch message, and
// not for a first call. Dead letters are kept on the first call only.
func TestWriterCountsRetriesOfTheSameBatchMessage(t *testing.T) {
	var fails atomic.Int32
	fails.Store(2)
	rec := &recordingSink{}
	box := &letterBox{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", DeadLetters: box, Observer: obs, MaxEventBytes: 4096,
		Sink: funcSink(func(ctx context.Context, b subscribers.Batch) error {
			if fails.Add(-1) >= 0 {
				return errors.New("timeout")
			}
			return rec.Write(ctx, b)
		})})
	evs := events(3, "m")
	big := event.New(event.LevelError, event.KindApp, strings.Repeat("x", 10_000))
	b := gather(t, chunk(t, evs[0], big), rawChunk("{not json\n", 1), chunk(t, evs[1:]...))
	for i, want := range []int{0, 1, 2} {
		err := w.Handle(b)
		if (err == nil) != (i == 2) {
			t.Fatalf("call %d: err = %v", i+1, err)
		}
		if got := obs.retries(); got != want {
			t.Fatalf("after call %d: %d retries counted, want %d", i+1, got, want)
		}
	}
	if got := eventIDs(rec.stored()); !slices.Equal(got, eventIDs(evs)) {
		t.Errorf("stored %v", got)
	}
	if r := box.byReason(); box.calls != 1 || r[subscribers.ReasonOversize] != 1 || r[subscribers.ReasonDecodeError] != 1 {
		t.Errorf("dead letters %v in %d calls, want one oversize and one decode error, kept once", r, box.calls)
	}

	// Another batch message: its first call is no retry, its second is.
	b2 := gather(t, chunk(t, events(1, "m")...))
	if err := w.Handle(b2); err != nil {
		t.Fatal(err)
	}
	if got := obs.retries(); got != 2 {
		t.Fatalf("the first call for a new batch message counted as a retry: %d", got)
	}
	if err := w.Handle(b2); err != nil {
		t.Fatal(err)
	}
	if got := obs.retries(); got != 3 {
		t.Fatalf("%d retries counted, want 3", got)
	}
}

// When the dead letters cannot be kept the batch fails (nothing written) and the next call keeps
// them and writes.
func TestWriterRetriesDeadLettersThatCouldNotBeKept(t *testing.T) {
	sink := &recordingSink{}
	box := &letterBox{fail: errors.New("dead-letter table locked")}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, DeadLetters: box, Observer: obs})
	evs := events(2, "m")
	b := gather(t, chunk(t, evs...), rawChunk("{not json\n", 1))
	if err := w.Handle(b); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("err = %v, want the dead-letter sink's", err)
	}
	if sink.calls.Load() != 0 {
		t.Fatal("wrote the batch before its dead letters were kept")
	}
	box.mu.Lock()
	box.fail = nil
	box.mu.Unlock()
	if err := w.Handle(b); err != nil {
		t.Fatal(err)
	}
	if len(box.letters) != 1 || !slices.Equal(eventIDs(sink.stored()), eventIDs(evs)) {
		t.Fatalf("letters %d, stored %v", len(box.letters), eventIDs(sink.stored()))
	}
	if obs.retries() != 1 {
		t.Errorf("%d retries", obs.retries())
	}
}

// Port of the old "takes in-process events from the context": the events a publisher put in a
// chunk's context are written as they are, its payload is not decoded.
func TestWriterTakesInProcessEventsFromTheContext(t *testing.T) {
	for _, viaBatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", viaBatch), func(t *testing.T) {
			sink := &recordingSink{}
			obs := &countingObserver{}
			w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Observer: obs})
			e := event.New(event.LevelInfo, event.KindApp, "in process")
			line, _ := event.Encode(e)
			e.Raw = line[:len(line)-1]
			// The payload is not even decodable: the events in the context are what counts.
			msg := message.NewMessage("m", []byte("not decoded"))
			msg.SetContext(event.NewContext(context.Background(), []*event.Event{e}))
			if viaBatch {
				msg = gather(t, msg)
			}
			if err := w.Handle(msg); err != nil {
				t.Fatal(err)
			}
			if _, total := sink.sizes(); total != 1 || sink.batches[0].Events[0] != e {
				t.Fatalf("wrote %d events; want the very event of the context", total)
			}
			if len(obs.rejected) != 0 {
				t.Fatalf("the payload was decoded: %v", obs.rejected)
			}
		})
	}
}

// A permanent failure of a one-event batch dead-letters the event at once.
func TestWriterDeadLettersTheOnlyEventOfARefusedBatch(t *testing.T) {
	sink := &poisonSink{}
	w := newWriter(t, subscribers.WriterConfig{Route: "pg", Sink: sink, DeadLetters: sink})
	e := event.New(event.LevelError, event.KindApp, "poison")
	if err := w.Handle(gather(t, chunk(t, e))); err != nil {
		t.Fatal(err)
	}
	if n := sink.attempts.Load(); n != 1 || len(sink.letters) != 1 || sink.letters[0].ID != e.ID ||
		!strings.Contains(sink.letters[0].Detail, "value out of range") {
		t.Fatalf("%d attempts, letters %+v", n, sink.letters)
	}
}

// verifyingSink stores a batch and then, like a store whose answer is lost, waits for the write's
// context to end and returns its error; Stored says what it holds (or fails with lookupErr).
type verifyingSink struct {
	mu        sync.Mutex
	held      map[uuid.UUID]bool
	store     bool // the write stores the batch before its answer is lost
	lookupErr error
}

func (s *verifyingSink) Name() string { return "verifying" }
func (s *verifyingSink) Close() error { return nil }
func (s *verifyingSink) Write(ctx context.Context, b subscribers.Batch) error {
	if s.store {
		s.mu.Lock()
		s.held[b.ID] = true
		s.mu.Unlock()
	}
	<-ctx.Done()
	return ctx.Err()
}
func (s *verifyingSink) Stored(ctx context.Context, b subscribers.Batch) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[b.ID], s.lookupErr
}

// A write ended by its context without an answer is looked up in the store (a Verifier): a batch the
// store holds all the same counts as written; one it does not hold, or a failed look-up, does not.
func TestWriterLooksUpAWriteEndedWithoutAnAnswer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		store     bool
		lookupErr error
		written   bool
	}{
		{"stored all the same", true, nil, true},
		{"not stored", false, nil, false},
		{"look-up failed", true, errors.New("store down"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &verifyingSink{held: map[uuid.UUID]bool{}, store: tc.store, lookupErr: tc.lookupErr}
			w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, WriteTimeout: 10 * time.Millisecond})
			err := w.Handle(chunk(t, events(3, "m")...))
			if tc.written && err != nil {
				t.Fatalf("Handle = %v, want nil: the store holds the batch", err)
			}
			if !tc.written && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Handle = %v, want the write's context error", err)
			}
		})
	}
}
