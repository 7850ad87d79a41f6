package sluice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// fakeSink records the events written and the calls made; fail, when set, decides the outcome of
// each call (by its 1-based number), and block makes every call wait for its context.
type fakeSink struct {
	mu      sync.Mutex
	calls   []subscribers.Batch
	stored  map[[16]byte]int
	fail    func(call int) error
	blocked atomic.Bool
}

func (s *fakeSink) Name() string { return "fake" }
func (s *fakeSink) Close() error { return nil }

func (s *fakeSink) Write(ctx context.Context, b subscribers.Batch) error {
	s.mu.Lock()
	s.calls = append(s.calls, b)
	n := len(s.calls)
	s.mu.Unlock()
	if s.blocked.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if s.fail != nil {
		if err := s.fail(n); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stored == nil {
		s.stored = map[[16]byte]int{}
	}
	for _, e := range b.Events {
		s.stored[e.ID]++
	}
	return nil
}

func (s *fakeSink) snapshot() (calls []subscribers.Batch, stored map[[16]byte]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored = make(map[[16]byte]int, len(s.stored))
	for k, v := range s.stored {
		stored[k] = v
	}
	return append([]subscribers.Batch(nil), s.calls...), stored
}

// testPipeline starts a pipeline whose routes all write sink.
func testPipeline(t testing.TB, sink subscribers.Sink, change func(*Config)) *Pipeline {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Routes = []Route{{Name: "r", Sink: "blob"}}
	if change != nil {
		change(&cfg)
	}
	p, err := New(context.Background(), cfg, WithLogger(slog.New(slog.DiscardHandler)),
		func(o *options) {
			o.sinkFor = func(Route) (subscribers.Sink, time.Duration) { return sink, 10 * time.Second }
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func appEvent(i int) *event.Event {
	return event.New(event.LevelInfo, event.KindApp, fmt.Sprintf("event %d", i))
}

// One failed batch write is one retry sequence, whatever the number of chunks and events in the batch:
// the sink sees MaxAttempts calls for that batch, all with the same batch id and events, and
// sluice_retries_total counts MaxAttempts-1. The batch is then handed out again, the same batch (same
// id, same events: not its chunks given back to the bus), and written; sluice_batches_redelivered_total
// counts it.
func TestFailedBatchWriteIsOneRetrySequence(t *testing.T) {
	storageDown := errors.New("connection refused")
	sink := &fakeSink{fail: func(call int) error {
		if call <= 3 {
			return storageDown
		}
		return nil
	}}
	p := testPipeline(t, sink, func(c *Config) {
		c.Bus.RedeliveryDelay = 10 * time.Millisecond
		c.Bus.MaxRedeliveryDelay = 10 * time.Millisecond
		c.Routes[0].Chunk = config.ChunkPolicy{MaxEvents: 10, MaxBytes: 1 << 20, Linger: time.Hour}
		c.Routes[0].Batch = config.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond, MaxConcurrentWrites: 1}
		c.Routes[0].Retry = config.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond}
		c.Routes[0].Breaker = config.Breaker{Failures: 100, Cooldown: time.Minute}
	})
	const n = 100
	for i := range n {
		if err := p.Publish(context.Background(), appEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range p.routes {
		r.chunks.flush()
	}
	waitFor(t, "every event stored", func() bool { _, stored := sink.snapshot(); return len(stored) == n })
	calls, stored := sink.snapshot()
	for i := 1; i < 3; i++ {
		if calls[i].ID != calls[0].ID || len(calls[i].Events) != len(calls[0].Events) {
			t.Fatalf("call %d wrote batch %s of %d events, want the retry of batch %s of %d", i+1,
				calls[i].ID, len(calls[i].Events), calls[0].ID, len(calls[0].Events))
		}
	}
	if len(calls[0].Events) < 10 {
		t.Fatalf("the failed batch had %d events: want whole chunks of 10", len(calls[0].Events))
	}
	i := slices.IndexFunc(calls[3:], func(b subscribers.Batch) bool { return b.ID == calls[0].ID })
	if i < 0 || len(calls[3+i].Events) != len(calls[0].Events) {
		t.Fatalf("the failed batch %s of %d events was not written again as the same batch", calls[0].ID, len(calls[0].Events))
	}
	// The count is taken by the batch's watch goroutine, which may run after the write did.
	want := `sluice_batches_redelivered_total{route="r"} 1`
	waitFor(t, want+" in /metrics", func() bool {
		rec := httptest.NewRecorder()
		p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return strings.Contains(rec.Body.String(), want)
	})
	if got := p.bus.Stats().Redelivered; got != 0 {
		t.Fatalf("the bus offered %d chunks again, want none (the batch is handed out again whole)", got)
	}
	if got := testutil.ToFloat64(p.metrics.retries.WithLabelValues("r")); got != 2 {
		t.Fatalf("sluice_retries_total = %v, want 2 (one sequence of 3 attempts)", got)
	}
	if got := testutil.ToFloat64(p.metrics.writeErrors.WithLabelValues("r", "fake")); got != 3 {
		t.Fatalf("sluice_sink_write_errors_total = %v, want 3", got)
	}
	for id, k := range stored {
		if k != 1 {
			t.Fatalf("event %x stored %d times", id, k)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// Close seals the open chunks (whose linger and batch wait are an hour away) and writes them.
func TestCloseFlushesOpenChunks(t *testing.T) {
	sink := &fakeSink{}
	p := testPipeline(t, sink, func(c *Config) {
		c.Routes[0].Chunk = config.ChunkPolicy{MaxEvents: 1000, MaxBytes: 1 << 20, Linger: time.Hour}
		c.Routes[0].Batch.MaxWait = time.Hour
	})
	const n = 37
	for i := range n {
		if err := p.Publish(context.Background(), appEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.bus.Stats(); st.ReservedEvents+st.DepthEvents != n || st.ReservedEvents == 0 {
		t.Fatalf("before Close: %d events reserved in open chunks and %d in the bus, want %d in all, some in open chunks",
			st.ReservedEvents, st.DepthEvents, n)
	}
	if calls, _ := sink.snapshot(); len(calls) != 0 {
		t.Fatalf("%d writes before Close, want none (the batch waits an hour)", len(calls))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, stored := sink.snapshot(); len(stored) != n {
		t.Fatalf("stored %d events, want %d", len(stored), n)
	}
}

// A million publishes into a route whose sink never answers: the route's share of the bus (open
// chunks included) fills to its bound, and every event after that is refused at once. Accepted and
// dropped add up to the attempts exactly, on the publishers' side, in the bus and in the metrics;
// goroutines and the live heap stay flat.
func TestMillionPublishesIntoStuckRouteAreCountedExactly(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	sink := &fakeSink{}
	sink.blocked.Store(true)
	const bound = 10_000
	p := testPipeline(t, sink, func(c *Config) {
		c.Bus.MaxEvents = bound
		c.Routes[0].Batch.MaxWait = 10 * time.Millisecond
	})
	var accepted, dropped int
	goroutines := runtime.NumGoroutine()
	var liveAtTenth uint64
	for i := range n {
		err := p.Publish(context.Background(), &event.Event{ID: event.NewID(), TS: time.Unix(1700000000, 0).UTC(),
			Level: event.LevelInfo, Kind: event.KindApp, Message: "m"})
		var drop *DropError
		switch {
		case err == nil:
			accepted++
		case errors.As(err, &drop) && drop.Reason() == bus.ReasonQueueFull:
			dropped++
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
		if i == n/10 {
			liveAtTenth = liveHeap()
		}
	}
	if accepted+dropped != n {
		t.Fatalf("accepted %d + dropped %d != %d", accepted, dropped, n)
	}
	if accepted > bound || accepted < bound/2 {
		t.Fatalf("accepted %d events into a bound of %d", accepted, bound)
	}
	if got := testutil.ToFloat64(p.metrics.dropped.WithLabelValues(bus.ReasonQueueFull, "r")); int(got) != dropped {
		t.Fatalf("sluice_events_dropped_total{queue_full,r} = %v, want %d", got, dropped)
	}
	st := p.bus.Stats()
	if st.DepthEvents+st.ReservedEvents != int64(accepted) {
		t.Fatalf("the bus holds %d + %d reserved events, want the %d accepted", st.DepthEvents, st.ReservedEvents, accepted)
	}
	if st.DroppedEvents[bus.ReasonQueueFull] != int64(dropped) {
		t.Fatalf("bus dropped %d events (queue_full), want %d", st.DroppedEvents[bus.ReasonQueueFull], dropped)
	}
	if g := runtime.NumGoroutine(); g > goroutines+20 {
		t.Fatalf("goroutines %d -> %d", goroutines, g)
	}
	if live := liveHeap(); live > liveAtTenth+16<<20 {
		t.Fatalf("live heap grew from %d MiB (at %d publishes) to %d MiB (at %d)", liveAtTenth>>20, n/10, live>>20, n)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The throttle passes the same events per second whether they come in messages of 1, 10 or 250 events,
// and reports each message's wait (sluice_throttle_wait_seconds). It runs in a synctest bubble: the clock is virtual and moves only when every goroutine waits, so the
// times compared are exact and do not depend on how busy the machine is.
func TestThrottlePassesEventsPerSecondWhateverTheBatchSizes(t *testing.T) {
	for _, size := range []int{1, 10, 250} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const rate, total = 1000.0, 5000
				th := NewThrottle(rate)
				var waited time.Duration
				th.onWait = func(d time.Duration) { waited += d }
				var passed int
				h := th.Middleware(func(msg *message.Message) ([]*message.Message, error) {
					passed += len(msg.Payload)
					return nil, nil
				})
				start := time.Now()
				var lastStart time.Duration
				for sent := 0; sent < total; sent += size {
					msg := message.NewMessage("m", make([]byte, size))
					msg.Metadata.Set(event.MetadataEvents, fmt.Sprint(size))
					if _, err := h(msg); err != nil {
						t.Fatal(err)
					}
					lastStart = time.Since(start)
				}
				// The last message starts once every event before it had its 1/rate.
				want := time.Duration(float64(total-size) / rate * float64(time.Second))
				if passed != total || lastStart != want {
					t.Fatalf("%d events passed; the last message started at %v, want %v", passed, lastStart, want)
				}
				// The messages came one after the other: all the time went in waiting for the throttle.
				if waited != want {
					t.Fatalf("the throttle reports %v of waiting, want %v", waited, want)
				}
			})
		})
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkPublish measures the request path's cost of handing one encoded event to a route (the
// chunker's append and the bus reservation), from many goroutines at once: run with -cpu 1,2,8. The
// route's sink stores nothing and answers at once.
func BenchmarkPublish(b *testing.B) {
	p := testPipeline(b, discardSink{}, nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e := &event.Event{ID: event.NewID(), TS: time.Unix(1700000000, 0).UTC(), Level: event.LevelInfo,
				Kind: event.KindApp, Message: "benchmark", Raw: nil}
			_ = p.Publish(context.Background(), e)
		}
	})
}

// BenchmarkChunkerAdd measures the append alone (the event is encoded beforehand), from many
// goroutines at once (run with -cpu 1,2,8), into a route whose subscriber acknowledges every chunk at
// once, so that the bound is never what is measured: refused/op must stay 0.
func BenchmarkChunkerAdd(b *testing.B) {
	bs, err := bus.New(bus.Config{MaxEvents: 1 << 20, MaxBytes: 1 << 30, MaxInFlight: 64, PreserveContext: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	msgs, err := bs.Subscribe(context.Background(), "t")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range msgs {
			m.Ack()
		}
	}()
	var refused atomic.Int64
	c := newChunker("t", bs, config.DefaultChunkPolicy(), func(string, int) { refused.Add(1) })
	raw := []byte(`{"id":"0190b4f4-0000-7000-8000-000000000000","ts":"2026-12-02T00:00:00Z","level":"INFO","kind":"app","message":"benchmark"}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// The events are made beforehand and used again (the chunker only reads them): what is
		// measured is the append, not the allocation of events.
		events := make([]event.Event, 1024)
		for i := range events {
			events[i].Raw = raw
		}
		for i := 0; pb.Next(); i++ {
			if c.add(&events[i%len(events)], raw, false) != nil {
				refused.Add(1)
			}
		}
	})
	b.StopTimer()
	c.flush()
	b.ReportMetric(float64(refused.Load())/float64(b.N), "refused/op")
}

type discardSink struct{}

func (discardSink) Name() string                                   { return "discard" }
func (discardSink) Close() error                                   { return nil }
func (discardSink) Write(context.Context, subscribers.Batch) error { return nil }

// An event whose Raw is empty but not nil is encoded like one without Raw: its line is its JSON, not
// an empty line (which a worker's decoder would skip, losing the event).
func TestEmptyRawIsEncoded(t *testing.T) {
	sink := &fakeSink{}
	p := testPipeline(t, sink, nil)
	e := appEvent(1)
	e.Raw = []byte{}
	if err := p.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls, stored := sink.snapshot()
	if stored[e.ID] != 1 || len(calls) == 0 {
		t.Fatalf("stored %d times in %d batches", stored[e.ID], len(calls))
	}
	got := calls[len(calls)-1].Events[0]
	if !bytes.Contains(got.Raw, []byte(`"message":"event 1"`)) {
		t.Fatalf("the event's Raw is %q, want its JSON", got.Raw)
	}
}
