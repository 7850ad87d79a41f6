package subscribers_test

import (
	"context"
	"errors"
	"fmt"
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
}

func (s *recordingSink) Write(ctx context.Context, b subscribers.Batch) error {
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

func newMsg(t testing.TB, events ...*event.Event) *message.Message {
	t.Helper()
	payload, err := event.Encode(events...)
	if err != nil {
		t.Fatal(err)
	}
	return message.NewMessage(uuid.NewString(), payload)
}

func newBatcher(t *testing.T, sink *recordingSink, p subscribers.BatchPolicy, match func(*event.Event) bool, obs subscribers.Observer) *subscribers.Batcher {
	t.Helper()
	b, err := subscribers.NewBatcher(subscribers.BatcherConfig{Route: "test", Policy: p, Write: sink.Write, Match: match, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// handleAll runs Handle for every message concurrently, as message.Router does, and returns the errors.
func handleAll(b *subscribers.Batcher, msgs []*message.Message) []error {
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Handle(m) }()
	}
	wg.Wait()
	return errs
}

func TestBatcherFillsBatchesAndFlushesTheRestAfterMaxWait(t *testing.T) {
	sink := &recordingSink{}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 30, MaxWait: 50 * time.Millisecond, MaxConcurrentWrites: 1}, nil, nil)
	var msgs []*message.Message
	for i := 0; i < 250; i++ {
		msgs = append(msgs, newMsg(t, event.New(event.LevelInfo, event.KindApp, "m")))
	}
	for i, err := range handleAll(b, msgs) {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	sizes, total := sink.sizes()
	if total != 250 {
		t.Fatalf("wrote %d events, want 250 (batches %v)", total, sizes)
	}
	full := 0
	for _, s := range sizes {
		if s == 100 {
			full++
		}
	}
	if full < 2 {
		t.Errorf("batch sizes %v: want two full batches of 100", sizes)
	}
}

func TestBatcherFlushesAtMaxBytes(t *testing.T) {
	sink := &recordingSink{}
	e := event.New(event.LevelInfo, event.KindApp, string(make([]byte, 1000)))
	one, _ := event.Encode(e)
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: int64(len(one)*3 - 100), MaxWait: time.Hour, MaxConcurrentWrites: 1}, nil, nil)
	var msgs []*message.Message
	for i := 0; i < 6; i++ {
		msgs = append(msgs, newMsg(t, event.New(event.LevelInfo, event.KindApp, string(make([]byte, 1000)))))
	}
	handleAll(b, msgs) // would hang for an hour if the byte bound did not flush (3 events pass the bound, 2 do not)
	if sizes, total := sink.sizes(); total != 6 || len(sizes) != 2 {
		t.Fatalf("batches %v, want two of 3", sizes)
	}
}

func TestBatcherFailedWriteFailsEveryMessageOfTheBatch(t *testing.T) {
	boom := errors.New("storage down")
	sink := &recordingSink{fail: boom}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: 20 * time.Millisecond, MaxConcurrentWrites: 1}, nil, nil)
	var msgs []*message.Message
	for i := 0; i < 10; i++ {
		msgs = append(msgs, newMsg(t, event.New(event.LevelError, event.KindApp, "m")))
	}
	for i, err := range handleAll(b, msgs) {
		if !errors.Is(err, boom) {
			t.Errorf("message %d: err = %v, want %v", i, err, boom)
		}
	}
}

type countingObserver struct {
	mu       sync.Mutex
	rejected map[string]int
	written  int
}

func (o *countingObserver) BatchWritten(_ string, events, _ int, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		o.written += events
	}
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

func TestBatcherFiltersByRouteAndSurvivesBadLines(t *testing.T) {
	sink := &recordingSink{}
	obs := &countingObserver{}
	warnOrWorse := func(e *event.Event) bool { return e.Level == event.LevelWarn || e.Level == event.LevelError }
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 20 * time.Millisecond, MaxConcurrentWrites: 1}, warnOrWorse, obs)

	info := event.New(event.LevelInfo, event.KindHTTP, "GET /hello 200")
	warn := event.New(event.LevelWarn, event.KindHTTP, "GET /nope 404")
	good, _ := event.Encode(info, warn)
	payload := append([]byte("{not json\n"), good...)
	payload = append(payload, []byte(`{"id":"`+uuid.NewString()+`","ts":"2026-01-01T00:00:00Z","level":"LOUD","kind":"app","message":"x"}`+"\n")...)

	if err := b.Handle(message.NewMessage("m1", payload)); err != nil {
		t.Fatal(err)
	}
	if err := b.Handle(newMsg(t, event.New(event.LevelDebug, event.KindApp, "skip"))); err != nil {
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

func TestBatcherDrainWritesWithoutWaitingForMaxWait(t *testing.T) {
	sink := &recordingSink{}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1}, nil, nil)
	errc := make(chan error, 1)
	go func() { errc <- b.Handle(newMsg(t, event.New(event.LevelInfo, event.KindApp, "m"))) }()
	// The message sits in a batch that would wait an hour; Drain must write it now.
	deadline := time.After(10 * time.Second)
	for {
		b.Drain()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
			if _, total := sink.sizes(); total != 1 {
				t.Fatalf("wrote %d", total)
			}
			return
		case <-deadline:
			t.Fatal("Drain did not write the pending batch")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestBatcherWritesDuplicateEventsOnce(t *testing.T) {
	sink := &recordingSink{}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 2, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1}, nil, nil)
	e := event.New(event.LevelInfo, event.KindApp, "m")
	handleAll(b, []*message.Message{newMsg(t, e), newMsg(t, e)})
	if _, total := sink.sizes(); total != 1 {
		t.Fatalf("wrote %d copies of one event", total)
	}
}

func TestBatcherBoundsConcurrentWrites(t *testing.T) {
	sink := &recordingSink{gate: make(chan struct{})}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 2}, nil, nil)
	var msgs []*message.Message
	for i := 0; i < 8; i++ {
		msgs = append(msgs, newMsg(t, event.New(event.LevelInfo, event.KindApp, "m")))
	}
	done := make(chan []error)
	go func() { done <- handleAll(b, msgs) }()
	deadline := time.Now().Add(10 * time.Second)
	for sink.active.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(sink.gate)
	for _, err := range <-done {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := sink.maxSeen.Load(); m != 2 {
		t.Fatalf("at most %d writes ran at once, want exactly the bound 2", m)
	}
}

func TestBatchIDIsStableForTheSameEvents(t *testing.T) {
	a := event.New(event.LevelInfo, event.KindApp, "a")
	c := event.New(event.LevelInfo, event.KindApp, "c")
	if subscribers.NewBatch([]*event.Event{a, c}).ID != subscribers.NewBatch([]*event.Event{a, c}).ID {
		t.Fatal("same events, different batch ids")
	}
	if subscribers.NewBatch([]*event.Event{a}).ID == subscribers.NewBatch([]*event.Event{c}).ID {
		t.Fatal("different events, same batch id")
	}
}

func TestNewBatcherRejectsBadPolicy(t *testing.T) {
	_, err := subscribers.NewBatcher(subscribers.BatcherConfig{Route: "pg", Write: (&recordingSink{}).Write,
		Policy: subscribers.BatchPolicy{MaxEvents: -1, MaxBytes: 1, MaxWait: 1, MaxConcurrentWrites: 1}})
	if err == nil || !contains(err.Error(), `route "pg"`, "max_events", "-1") {
		t.Fatalf("err = %v", err)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// poisonSink refuses, permanently, any batch holding an event whose message is "poison", as a
// database refuses a whole COPY for one bad row; it keeps dead letters.
type poisonSink struct {
	recordingSink
	mu       sync.Mutex
	letters  []subscribers.DeadLetter
	attempts int
}

func (s *poisonSink) Write(ctx context.Context, b subscribers.Batch) error {
	s.mu.Lock()
	s.attempts++
	s.mu.Unlock()
	for _, e := range b.Events {
		if e.Message == "poison" {
			return subscribers.Permanent(fmt.Errorf("event %s: value out of range", e.ID))
		}
	}
	return s.recordingSink.Write(ctx, b)
}

func (s *poisonSink) WriteDeadLetters(_ context.Context, l []subscribers.DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.letters = append(s.letters, l...)
	return nil
}

func TestBatcherIsolatesPoisonEventsAndWritesTheRest(t *testing.T) {
	sink := &poisonSink{}
	obs := &countingObserver{}
	b, err := subscribers.NewBatcher(subscribers.BatcherConfig{Route: "pg", Write: sink.Write, DeadLetters: sink, Observer: obs,
		MaxEventBytes: 4096,
		Policy:        subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: 1 << 30, MaxWait: 50 * time.Millisecond, MaxConcurrentWrites: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var msgs []*message.Message
	poison := map[uuid.UUID]bool{}
	for i := 0; i < 1000; i++ {
		e := event.New(event.LevelError, event.KindApp, "fine")
		if i%250 == 7 {
			e.Message = "poison"
			poison[e.ID] = true
		}
		msgs = append(msgs, newMsg(t, e))
	}
	big := event.New(event.LevelError, event.KindApp, strings.Repeat("x", 10_000))
	msgs = append(msgs, newMsg(t, big), message.NewMessage("bad", []byte(`{"id":"`+uuid.NewString()+`","ts":"yesterday","level":"ERROR","kind":"app","message":"m"}`+"\n")))
	for i, err := range handleAll(b, msgs) {
		if err != nil {
			t.Fatalf("message %d: %v (every message must be acked: stored or dead-lettered)", i, err)
		}
	}
	_, total := sink.sizes()
	if total != 1000-len(poison) {
		t.Errorf("stored %d events, want %d", total, 1000-len(poison))
	}
	reasons := map[string]int{}
	for _, l := range sink.letters {
		reasons[l.Reason]++
		if l.Reason == subscribers.ReasonInvalidData && !poison[l.ID] {
			t.Errorf("dead-lettered a good event %s", l.ID)
		}
		if len(l.Raw) == 0 || l.FailedAt.IsZero() || l.Route != "pg" {
			t.Errorf("dead letter lacks its raw bytes, time or route: %+v", l)
		}
	}
	want := map[string]int{subscribers.ReasonInvalidData: len(poison), subscribers.ReasonOversize: 1, subscribers.ReasonDecodeError: 1}
	for r, n := range want {
		if reasons[r] != n {
			t.Errorf("dead letters by reason %v, want %v", reasons, want)
			break
		}
	}
	if obs.rejected["dead:invalid_data"] != len(poison) {
		t.Errorf("observer: %v", obs.rejected)
	}
	t.Logf("%d write attempts to isolate %d poison events among 1000", sink.attempts, len(poison))
	if sink.attempts > 100 {
		t.Errorf("%d write attempts: bisection should need about 2*k*log2(n)", sink.attempts)
	}
}

func TestBatcherTransientFailureWhileIsolatingFailsTheBatch(t *testing.T) {
	sink := &poisonSink{}
	poison := event.New(event.LevelError, event.KindApp, "poison")
	good := event.New(event.LevelError, event.KindApp, "fine")
	// The first write fails permanently; then storage goes down: the batch must fail (transient),
	// nothing dead-lettered.
	origWrite := sink.Write
	calls := 0
	b2, err := subscribers.NewBatcher(subscribers.BatcherConfig{Route: "pg", DeadLetters: sink,
		Write: func(ctx context.Context, batch subscribers.Batch) error {
			calls++
			if calls > 1 {
				return errors.New("connection reset")
			}
			return origWrite(ctx, batch)
		},
		Policy: subscribers.BatchPolicy{MaxEvents: 2, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	for _, err := range handleAll(b2, []*message.Message{newMsg(t, poison), newMsg(t, good)}) {
		if err == nil || subscribers.IsPermanent(err) {
			t.Fatalf("err = %v, want the transient error", err)
		}
	}
	if len(sink.letters) != 0 {
		t.Fatalf("dead-lettered %d events on a transient failure", len(sink.letters))
	}
}

func TestBatcherAbortEndsWritesThatWait(t *testing.T) {
	sink := &recordingSink{gate: make(chan struct{})} // never opened: a write that waits forever
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1}, nil, nil)
	errc := make(chan error, 1)
	go func() { errc <- b.Handle(newMsg(t, event.New(event.LevelInfo, event.KindApp, "m"))) }()
	for sink.active.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	b.Abort()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not end the waiting write")
	}
}

func TestBatcherTakesInProcessEventsFromTheContext(t *testing.T) {
	sink := &recordingSink{}
	obs := &countingObserver{}
	b := newBatcher(t, sink, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1}, nil, obs)
	e := event.New(event.LevelInfo, event.KindApp, "in process")
	line, _ := event.Encode(e)
	e.Raw = line[:len(line)-1]
	// The payload is not even decodable: the events in the context are what counts.
	msg := message.NewMessage("m", []byte("not decoded"))
	msg.SetContext(event.NewContext(context.Background(), []*event.Event{e}))
	if err := b.Handle(msg); err != nil {
		t.Fatal(err)
	}
	if _, total := sink.sizes(); total != 1 || sink.batches[0].Events[0] != e {
		t.Fatalf("wrote %d events; want the very event of the context", total)
	}
	if len(obs.rejected) != 0 {
		t.Fatalf("the payload was decoded: %v", obs.rejected)
	}
}
