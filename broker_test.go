package sluice

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// flakyPublisher fails while down is set, and records the UUIDs it was asked to publish.
type flakyPublisher struct {
	message.Publisher
	down      atomic.Bool
	mu        sync.Mutex
	tried     map[string]int
	encodings map[string]int // messages by their event.MetadataFormat
}

func (f *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	f.mu.Lock()
	for _, m := range msgs {
		f.tried[m.UUID]++
		f.encodings[m.Metadata.Get(event.MetadataFormat)]++
	}
	f.mu.Unlock()
	if f.down.Load() {
		return errors.New("connection refused")
	}
	return f.Publisher.Publish(topic, msgs...)
}

// goChannelBroker is a broker in memory: every Subscribe gets every message (one member per group),
// kept for subscribers that come later.
func goChannelBroker() (*flakyPublisher, brokers.Broker) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	pub := &flakyPublisher{Publisher: gc, tried: map[string]int{}, encodings: map[string]int{}}
	return pub, brokers.FromWatermill(pub, func(string) (message.Subscriber, error) { return gc, nil })
}

func brokerConfig() Config {
	cfg := DefaultConfig()
	cfg.Routes = []Route{{Name: "errors", Sink: "blob", Levels: []string{"WARN", "ERROR"}}, {Name: "all", Sink: "blob"}}
	cfg.Bus.Forward.Chunk = config.ChunkPolicy{MaxEvents: 50, MaxBytes: 1 << 20, Linger: 20 * time.Millisecond}
	cfg.Bus.Forward.Retry = config.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}
	cfg.Bus.Forward.Breaker = config.Breaker{Failures: 1000, Cooldown: time.Second}
	cfg.Bus.RedeliveryDelay, cfg.Bus.MaxRedeliveryDelay = 5*time.Millisecond, 20*time.Millisecond
	return cfg
}

func quiet() Option { return WithLogger(slog.New(slog.DiscardHandler)) }

func startWorker(t *testing.T, cfg Config, b brokers.Broker, sinks map[string]*fakeSink) *Pipeline {
	t.Helper()
	w, err := NewWorker(context.Background(), cfg, quiet(), WithBroker(b), func(o *options) {
		o.sinkFor = func(r Route) (subscribers.Sink, time.Duration) { return sinks[r.Name], 10 * time.Second }
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

// waitStored waits until sink holds n distinct events, and fails if any is stored twice.
func waitStored(t *testing.T, name string, s *fakeSink, n int) []subscribers.Batch {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		calls, stored := s.snapshot()
		for id, k := range stored {
			if k != 1 {
				t.Fatalf("%s: event %x stored %d times", name, id, k)
			}
		}
		if len(stored) == n {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d events stored", name, len(stored), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A web node forwards every event that some route takes to the broker, in chunks (compressed as
// bus.forward.compression says); a worker reads them once per route and writes each chunk as one
// batch: every event is stored once per route that takes it, and only there.
func TestWebNodeForwardsWorkerWrites(t *testing.T) {
	for _, c := range []string{event.EncodingS2, event.EncodingZstd, event.EncodingNone} {
		t.Run(c, func(t *testing.T) { testWebNodeForwardsWorkerWrites(t, c) })
	}
}

func testWebNodeForwardsWorkerWrites(t *testing.T, compression string) {
	cfg := brokerConfig()
	cfg.Bus.Forward.Compression = compression
	pub, b := goChannelBroker()
	web, err := New(context.Background(), cfg, quiet(), WithBroker(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := web.Routes(); len(got) != 1 || got[0].Name != ForwardRoute {
		t.Fatalf("a web node's routes: %+v, want the forward route alone", got)
	}
	sinks := map[string]*fakeSink{"errors": {}, "all": {}}
	startWorker(t, cfg, b, sinks)
	const n = 1000
	warn := 0
	for i := range n {
		e := appEvent(i)
		if i%4 == 0 {
			e.Level = event.LevelWarn
			warn++
		}
		if err := web.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := web.Close(context.Background()); err != nil {
		t.Fatalf("web node Close: %v", err)
	}
	for _, batch := range waitStored(t, "all", sinks["all"], n) {
		if len(batch.Events) > cfg.Bus.Forward.Chunk.MaxEvents {
			t.Errorf("a worker's batch of %d events, more than one chunk (%d)", len(batch.Events), cfg.Bus.Forward.Chunk.MaxEvents)
		}
	}
	waitStored(t, "errors", sinks["errors"], warn)
	if err := web.Publish(context.Background(), appEvent(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	want := event.ChunkFormatFor(compression) // "ndjson/1+s2", "ndjson/1+zstd", "ndjson/1"
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.encodings) != 1 || pub.encodings[want] < n/cfg.Bus.Forward.Chunk.MaxEvents {
		t.Errorf("messages by encoding %v, want every one %q", pub.encodings, want)
	}
}

// While the broker refuses publishes, the web node keeps accepting events (they wait on its bus) and
// says so on /readyz; when the broker is back, the backlog goes out, each chunk under the same id
// every time it is tried.
func TestBrokerDownEventsWaitThenGoOut(t *testing.T) {
	cfg := brokerConfig()
	pub, b := goChannelBroker()
	pub.down.Store(true)
	web, err := New(context.Background(), cfg, quiet(), WithBroker(b))
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close(context.Background())
	const n = 300
	for i := range n {
		if err := web.Publish(context.Background(), appEvent(i)); err != nil {
			t.Fatalf("Publish %d while the broker is down: %v", i, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pub.mu.Lock()
		retried := 0
		for _, k := range pub.tried {
			if k > 1 {
				retried++
			}
		}
		pub.mu.Unlock()
		if retried > 0 && web.Readiness().Routes[0].Error != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no chunk was tried twice, or /readyz does not say the broker failed: %+v", web.Readiness())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pub.down.Store(false)
	sinks := map[string]*fakeSink{"errors": {}, "all": {}}
	startWorker(t, cfg, b, sinks)
	waitStored(t, "all", sinks["all"], n)
	if err := web.Close(context.Background()); err != nil {
		t.Fatalf("Close once the broker is back: %v", err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.tried) > n/cfg.Bus.Forward.Chunk.MaxEvents+2*2 { // a chunk per shard may be sealed early by Linger
		t.Errorf("%d distinct message ids tried for %d events in chunks of %d: a retried chunk got a new id", len(pub.tried), n, cfg.Bus.Forward.Chunk.MaxEvents)
	}
}

// A worker needs a broker, and refuses to publish.
func TestWorkerNeedsABrokerAndDoesNotPublish(t *testing.T) {
	cfg := brokerConfig()
	_, err := NewWorker(context.Background(), cfg, quiet())
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Key != "bus.driver" {
		t.Fatalf("NewWorker on the memory bus: %v, want an error naming bus.driver", err)
	}
	_, b := goChannelBroker()
	w := startWorker(t, cfg, b, map[string]*fakeSink{"errors": {}, "all": {}})
	if err := w.Publish(context.Background(), appEvent(0)); !errors.Is(err, ErrWorker) {
		t.Errorf("Publish on a worker: %v, want ErrWorker", err)
	}
}

// refusingSubscriber refuses every subscription.
type refusingSubscriber struct{}

func (refusingSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return nil, errors.New("NOGROUP: no such consumer group")
}
func (refusingSubscriber) Close() error { return nil }

// A worker whose broker refuses its subscriptions fails to start, saying why, instead of waiting.
func TestWorkerFailsWhenTheBrokerRefusesToSubscribe(t *testing.T) {
	b := brokers.FromWatermill(nil, func(string) (message.Subscriber, error) { return refusingSubscriber{}, nil })
	_, err := NewWorker(context.Background(), brokerConfig(), quiet(), WithBroker(b), func(o *options) {
		o.sinkFor = func(Route) (subscribers.Sink, time.Duration) { return &fakeSink{}, time.Second }
	})
	if err == nil || !strings.Contains(err.Error(), "NOGROUP") {
		t.Fatalf("NewWorker: %v, want the subscription's error", err)
	}
}
