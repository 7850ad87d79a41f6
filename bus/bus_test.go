package bus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
)

const waitLimit = 10 * time.Second // how long a poll waits before it fails the test

func newBus(t testing.TB, cfg bus.Config) *bus.Bus {
	t.Helper()
	b, err := bus.New(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func subscribe(t testing.TB, b *bus.Bus, ctx context.Context, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(waitLimit):
		t.Fatal("no message within", waitLimit)
	}
	return nil
}

// nothing asserts that ch yields nothing for a little while (a negative check: it cannot prove more).
func nothing(t testing.TB, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %s", m.UUID)
	case <-time.After(50 * time.Millisecond):
	}
}

// publishN publishes n messages with ids "0" to "n-1" and fails the test on an error.
func publishN(t testing.TB, b *bus.Bus, topic string, n int) {
	t.Helper()
	for i := range n {
		if err := b.Publish(topic, msg(strconv.Itoa(i), "x")); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// drain waits until everything published has been acked.
func drain(t testing.TB, b *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func msg(id string, payload string) *message.Message {
	return message.NewMessage(id, []byte(payload))
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  bus.Config
		want string // "" for valid
	}{
		{bus.Config{}, ""},
		{bus.DefaultConfig(), ""},
		{bus.Config{MaxEvents: -1}, "bus: `max_events` (-1) must be positive"},
		{bus.Config{MaxBytes: -5}, "bus: `max_bytes` (-5) must be positive"},
		{bus.Config{OnFull: 7}, "bus: `on_full` (7) must be drop (0) or block (1)"},
		{bus.Config{MaxInFlight: -2}, "bus: `max_in_flight` (-2) must be positive"},
		{bus.Config{RedeliveryDelay: -time.Second}, "bus: `redelivery_delay` (-1s) must be positive"},
		{bus.Config{MaxRedeliveryDelay: -time.Second}, "bus: `max_redelivery_delay` (-1s) must be positive"},
		{bus.Config{RedeliveryDelay: 2 * time.Second, MaxRedeliveryDelay: time.Second},
			"bus: `max_redelivery_delay` (1s) must be greater or equal to `redelivery_delay` (2s)"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %s", tc.cfg, err, tc.want)
		}
		if _, err := bus.New(tc.cfg, nil); err == nil || !strings.HasPrefix(err.Error(), "invalid config: "+tc.want) {
			t.Errorf("New(%+v): got %v", tc.cfg, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := bus.DefaultConfig()
	if c.MaxEvents != 10_000 || c.MaxBytes != 64<<20 || c.OnFull != bus.Drop || c.MaxInFlight != 1_000 ||
		c.RedeliveryDelay != time.Second || c.MaxRedeliveryDelay != 30*time.Second || c.Retain || c.PreserveContext {
		t.Fatalf("defaults: %+v", c)
	}
	b := newBus(t, bus.Config{RedeliveryDelay: time.Minute})
	if got := b.Config().MaxRedeliveryDelay; got != time.Minute {
		t.Fatalf("max_redelivery_delay follows a larger redelivery_delay: got %s", got)
	}
	for _, s := range []string{"drop", "BLOCK"} {
		p, err := bus.ParseFullPolicy(s)
		if err != nil || !strings.EqualFold(p.String(), s) {
			t.Errorf("ParseFullPolicy(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := bus.ParseFullPolicy("wait"); err == nil {
		t.Error("ParseFullPolicy(wait): no error")
	}
}

func TestDeliversCopiesToEverySubscriber(t *testing.T) {
	b := newBus(t, bus.Config{})
	a := subscribe(t, b, context.Background(), "logs")
	c := subscribe(t, b, context.Background(), "logs")
	other := subscribe(t, b, context.Background(), "other")

	in := msg("id-1", "payload")
	in.Metadata.Set("k", "v")
	if err := b.Publish("logs", in); err != nil {
		t.Fatal(err)
	}
	in.Metadata.Set("k", "changed after publish")

	ma, mc := receive(t, a), receive(t, c)
	for _, m := range []*message.Message{ma, mc} {
		if m.UUID != "id-1" || string(m.Payload) != "payload" || m.Metadata.Get("k") != "v" {
			t.Fatalf("got %s %q %v", m.UUID, m.Payload, m.Metadata)
		}
	}
	if ma == mc || ma == in {
		t.Fatal("subscribers share a message")
	}
	ma.Metadata.Set("k", "a's")
	if mc.Metadata.Get("k") != "v" {
		t.Fatal("subscribers share metadata")
	}
	nothing(t, other)

	// Acking in one subscription leaves the other's copy unacked.
	ma.Ack()
	eventually(t, "a's ack counted", func() bool { return b.Stats().DepthMessages == 1 })
	mc.Ack()
	drain(t, b)
	st := b.Stats()
	if st.Published != 1 || st.PublishedEvents != 1 || st.Subscribers != 3 || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestDropWhenFull(t *testing.T) {
	b := newBus(t, bus.Config{MaxEvents: 3})
	ch := subscribe(t, b, context.Background(), "logs") // not read: stuck

	var full int
	for i := range 5 {
		err := b.Publish("logs", msg(strconv.Itoa(i), "x"))
		if err == nil {
			continue
		}
		var fe *bus.FullError
		if !errors.Is(err, bus.ErrFull) || !errors.As(err, &fe) || fe.Topic != "logs" || fe.Reason != bus.ReasonQueueFull {
			t.Fatalf("publish %d: %v", i, err)
		}
		full++
	}
	st := b.Stats()
	if full != 2 || st.Published != 3 || st.Dropped[bus.ReasonQueueFull] != 2 || st.DepthEvents != 3 {
		t.Fatalf("full %d, stats %+v", full, st)
	}

	// An ack makes room for exactly one more.
	receive(t, ch).Ack()
	eventually(t, "room after ack", func() bool { return b.Stats().DepthEvents == 2 })
	if err := b.Publish("logs", msg("5", "x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("logs", msg("6", "x")); !errors.Is(err, bus.ErrFull) {
		t.Fatalf("publish into a full bus: %v", err)
	}
}

func TestBoundsByBytesAndEvents(t *testing.T) {
	b := newBus(t, bus.Config{MaxEvents: 100, MaxBytes: 100})
	subscribe(t, b, context.Background(), "logs")

	// 40 bytes of payload + len("sluice_events") + len("10") = 55 bytes, 10 events.
	batch := func(id string) *message.Message {
		m := msg(id, strings.Repeat("x", 40))
		m.Metadata.Set(event.MetadataEvents, "10")
		return m
	}
	if err := b.Publish("logs", batch("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("logs", batch("b")); !errors.Is(err, bus.ErrFull) {
		t.Fatalf("second 55-byte message into 100 bytes: %v", err)
	}
	st := b.Stats()
	if st.DepthBytes != 55 || st.DepthEvents != 10 || st.PublishedEvents != 10 || st.DroppedEvents[bus.ReasonQueueFull] != 10 {
		t.Fatalf("stats: %+v", st)
	}

	// A message that could never fit is refused at once, whatever the policy.
	big := msg("big", "y")
	big.Metadata.Set(event.MetadataEvents, "101")
	var fe *bus.FullError
	if err := b.Publisher(bus.Block).Publish("logs", big); !errors.As(err, &fe) || fe.Reason != bus.ReasonTooLarge {
		t.Fatalf("too large: %v", err)
	}

	// A bad event count counts as one event.
	b = newBus(t, bus.Config{})
	subscribe(t, b, context.Background(), "logs")
	for _, v := range []string{"0", "-3", "ten", ""} {
		m := msg("bad-"+v, "")
		m.Metadata.Set(event.MetadataEvents, v)
		before := b.Stats().DepthEvents
		if err := b.Publish("logs", m); err != nil {
			t.Fatal(err)
		}
		if got := b.Stats().DepthEvents - before; got != 1 {
			t.Fatalf("%s=%q counted as %d events", event.MetadataEvents, v, got)
		}
	}
}

// TestBlockWaitsForRoom runs in a synctest bubble: synctest.Wait proves that a publisher is blocked,
// where a sleep would only hope so.
func TestBlockWaitsForRoom(t *testing.T) { synctest.Test(t, testBlockWaitsForRoom) }

func testBlockWaitsForRoom(t *testing.T) {
	b := newBus(t, bus.Config{MaxEvents: 1, OnFull: bus.Block})
	ch := subscribe(t, b, context.Background(), "logs")
	if err := b.Publish("logs", msg("1", "x")); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- b.Publish("logs", msg("2", "x")) }()
	m := receive(t, ch)
	synctest.Wait() // the publisher is blocked for good, or has returned
	select {
	case err := <-done:
		t.Fatalf("publish into a full bus returned before an ack: %v", err)
	default:
	}
	m.Ack()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch); m.UUID != "2" {
		t.Fatalf("got %s", m.UUID)
	}

	// Full again: a deadline ends the wait with an error that is ErrFull and the context's.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	late := msg("3", "x")
	late.SetContext(ctx)
	err := b.Publish("logs", late)
	if !errors.Is(err, bus.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	// The same bus publishes without waiting through a Drop view.
	if err := b.Publisher(bus.Drop).Publish("logs", msg("4", "x")); !errors.Is(err, bus.ErrFull) {
		t.Fatalf("drop view: %v", err)
	}
	if st := b.Stats(); st.Dropped[bus.ReasonQueueFull] != 2 || st.Published != 2 {
		t.Fatalf("stats: %+v", st)
	}

	// Close releases a waiting publisher with ErrClosed.
	go func() { done <- b.Publish("logs", msg("5", "x")) }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("publish into a full bus returned before Close: %v", err)
	default:
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("blocked publish at close: %v", err)
	}
}

// TestBlockWakesWhenItFits: a blocked publisher goes on as soon as its message fits, not later.
func TestBlockWakesWhenItFits(t *testing.T) {
	b := newBus(t, bus.Config{MaxEvents: 8, OnFull: bus.Block})
	ch := subscribe(t, b, context.Background(), "logs")
	publishN(t, b, "logs", 8)
	held := make([]*message.Message, 8)
	for i := range held {
		held[i] = receive(t, ch)
	}
	three := msg("three", "x")
	three.Metadata.Set(event.MetadataEvents, "3")
	done := make(chan error, 1)
	go func() { done <- b.Publish("logs", three) }()

	for i := range 3 {
		select {
		case err := <-done:
			t.Fatalf("a 3-event message went on with %d events free: %v", i, err)
		case <-time.After(20 * time.Millisecond):
		}
		held[i].Ack()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatal("still blocked with room for the message")
	}
}

func TestOneFullSubscriberDoesNotStallTheOthers(t *testing.T) {
	for _, policy := range []bus.FullPolicy{bus.Drop, bus.Block} {
		t.Run(policy.String(), func(t *testing.T) {
			b := newBus(t, bus.Config{MaxEvents: 2, OnFull: policy})
			fast := subscribe(t, b, context.Background(), "logs")
			subscribe(t, b, context.Background(), "logs") // stuck

			for i := range 5 {
				m := msg(strconv.Itoa(i), "x")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				m.SetContext(ctx)
				if err := b.Publish("logs", m); err != nil {
					t.Fatalf("publish %d: %v", i, err) // the fast subscriber took it
				}
				cancel()
				receive(t, fast).Ack()
				// The stuck share holds what it took; the fast one is empty once its ack is seen.
				eventually(t, "fast ack seen", func() bool { return b.Stats().DepthMessages == int64(min(i+1, 2)) })
			}
			st := b.Stats()
			if st.Published != 5 || st.Dropped[bus.ReasonSubscriberFull] != 3 || st.Dropped[bus.ReasonQueueFull] != 0 {
				t.Fatalf("stats: %+v", st)
			}
		})
	}
}

func TestNoSubscribers(t *testing.T) {
	b := newBus(t, bus.Config{})
	if err := b.Publish("nobody", msg("1", "x")); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Dropped[bus.ReasonNoSubscribers] != 1 || st.Published != 0 {
		t.Fatalf("stats: %+v", st)
	}
	// Subscribed later, the message is gone.
	nothing(t, subscribe(t, b, context.Background(), "nobody"))
}

func TestRetain(t *testing.T) {
	b := newBus(t, bus.Config{MaxEvents: 3, Retain: true})
	publishN(t, b, "logs", 5)
	st := b.Stats()
	if st.Published != 5 || st.Retained != 3 || st.Evicted != 2 {
		t.Fatalf("stats: %+v", st)
	}
	// Every new subscription starts with the retained messages, oldest first.
	for range 2 {
		ch := subscribe(t, b, context.Background(), "logs")
		for _, want := range []string{"2", "3", "4"} {
			if m := receive(t, ch); m.UUID != want {
				t.Fatalf("got %s, want %s", m.UUID, want)
			}
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n, e := b.Undelivered(), b.UndeliveredEvents(); n != 2+2*3 || e != int64(n) { // evicted untaken + both subscriptions' unacked copies
		t.Fatalf("undelivered %d (%d events)", n, e)
	}
}

func TestWindowHoldsManyUnacked(t *testing.T) {
	b := newBus(t, bus.Config{MaxInFlight: 10})
	ch := subscribe(t, b, context.Background(), "logs")
	publishN(t, b, "logs", 25)
	batch := make([]*message.Message, 0, 10)
	for range 10 {
		batch = append(batch, receive(t, ch))
	}
	nothing(t, ch) // the window is full until something is acked
	if st := b.Stats(); st.InFlight != 10 || st.DepthMessages != 25 {
		t.Fatalf("stats: %+v", st)
	}
	// Acks in any order free the window (the bus finds the ones behind an unacked first one).
	for i := len(batch) - 1; i >= 0; i-- {
		batch[i].Ack()
	}
	for i := 10; i < 25; i++ {
		m := receive(t, ch)
		if m.UUID != strconv.Itoa(i) {
			t.Fatalf("got %s, want %d", m.UUID, i)
		}
		m.Ack()
	}
	drain(t, b)
}

func TestMessageContext(t *testing.T) {
	b := newBus(t, bus.Config{})
	type key struct{}
	subCtx := context.WithValue(context.Background(), key{}, "sub")
	ch := subscribe(t, b, subCtx, "logs")
	in := msg("1", "x")
	in.SetContext(context.WithValue(context.Background(), key{}, "pub"))
	if err := b.Publish("logs", in); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch)
	if m.Context().Value(key{}) != "sub" {
		t.Fatal("a delivered message's context does not derive from the Subscribe context")
	}
	m.Ack()
	select {
	case <-m.Context().Done():
	case <-time.After(waitLimit):
		t.Fatal("context not cancelled after ack")
	}

	pb := newBus(t, bus.Config{PreserveContext: true})
	ch = subscribe(t, pb, subCtx, "logs")
	if err := pb.Publish("logs", in); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch); m.Context().Value(key{}) != "pub" {
		t.Fatal("PreserveContext: not the publisher's context")
	}
}

func TestSubscriptionEnd(t *testing.T) {
	b := newBus(t, bus.Config{MaxInFlight: 2})
	ctx, cancel := context.WithCancel(context.Background())
	ch := subscribe(t, b, ctx, "logs")
	publishN(t, b, "logs", 5)
	m1, m2 := receive(t, ch), receive(t, ch)
	m1.Ack()
	cancel()
	for range ch { // closes
	}
	select {
	case <-m2.Context().Done():
	case <-time.After(waitLimit):
		t.Fatal("an unacked message's context survives its subscription")
	}
	eventually(t, "subscription gone", func() bool { return b.Stats().Subscribers == 0 })
	st := b.Stats()
	if st.Abandoned != 4 || st.DepthMessages != 0 || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if b.Undelivered() != 4 || b.UndeliveredEvents() != 4 {
		t.Fatalf("undelivered %d (%d events)", b.Undelivered(), b.UndeliveredEvents())
	}
	// A later publish finds nobody.
	if err := b.Publish("logs", msg("5", "x")); err != nil {
		t.Fatal(err)
	}
	if b.Stats().Dropped[bus.ReasonNoSubscribers] != 1 {
		t.Fatal("not counted as no_subscribers")
	}
}

func TestDrainAndClose(t *testing.T) {
	b := newBus(t, bus.Config{})
	ch := subscribe(t, b, context.Background(), "logs")
	publishN(t, b, "logs", 3)
	receive(t, ch).Ack()
	held := receive(t, ch)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 messages not acked") {
		t.Fatalf("drain: %v", err)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	if b.Undelivered() != 2 {
		t.Fatalf("undelivered %d", b.Undelivered())
	}
	if held.Ack(); b.Undelivered() != 2 {
		t.Fatal("an ack after Close changed the count")
	}
	if err := b.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if err := b.Publish("logs", msg("x", "x")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if _, err := b.Subscribe(context.Background(), "logs"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
	if st := b.Stats(); st.Dropped[bus.ReasonClosed] != 1 || st.Published != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestNackRedeliversAfterDelay nacks every message four times: each redelivery comes no sooner than
// the configured delay after its nack (doubling, capped), and nothing is lost or duplicated.
func TestNackRedeliversAfterDelay(t *testing.T) {
	const (
		messages = 20
		nacks    = 4
		delay    = 10 * time.Millisecond
		maxDelay = 40 * time.Millisecond
	)
	want := []time.Duration{delay, 2 * delay, maxDelay, maxDelay} // after the 1st, 2nd, 3rd, 4th nack
	b := newBus(t, bus.Config{RedeliveryDelay: delay, MaxRedeliveryDelay: maxDelay})
	ch := subscribe(t, b, context.Background(), "logs")
	publishN(t, b, "logs", messages)

	deliveries := map[string]int{}
	nackedAt := map[string]time.Time{}
	acked := 0
	for acked < messages {
		m := receive(t, ch)
		now := time.Now()
		n := deliveries[m.UUID]
		deliveries[m.UUID]++
		if n > 0 {
			if gap := now.Sub(nackedAt[m.UUID]); gap < want[n-1] {
				t.Errorf("message %s redelivered %s after nack %d, want >= %s", m.UUID, gap, n, want[n-1])
			}
		}
		if n < nacks {
			nackedAt[m.UUID] = time.Now()
			m.Nack()
			continue
		}
		m.Ack()
		acked++
	}
	nothing(t, ch)
	for id, n := range deliveries {
		if n != nacks+1 {
			t.Errorf("message %s delivered %d times, want %d", id, n, nacks+1)
		}
	}
	if len(deliveries) != messages {
		t.Fatalf("%d distinct messages delivered, want %d", len(deliveries), messages)
	}
	drain(t, b)
	if st := b.Stats(); st.Redelivered != messages*nacks || st.Waiting != 0 || st.Published != messages {
		t.Fatalf("stats: %+v", st)
	}
}

// TestMillionEventsStuckSubscriber publishes 1,000,000 events in Drop mode into a bus of 10,000
// whose subscriber is stuck (it takes messages and acks none), then unsticks it. Goroutines and heap
// stay within a fixed bound throughout; accepted + dropped = attempted exactly; every accepted event
// is delivered exactly once.
func TestMillionEventsStuckSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 publishes")
	}
	const (
		attempts   = 1_000_000
		publishers = 4
		capacity   = 10_000
	)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, baseG := ms.HeapAlloc, runtime.NumGoroutine()
	const (
		heapBound = 64 << 20 // over the baseline, garbage included; GoChannel needs gigabytes here
		gBound    = publishers + 4
	)

	b := newBus(t, bus.Config{MaxEvents: capacity})
	ch := subscribe(t, b, context.Background(), "logs")

	// The subscriber takes what the window lets it (MaxInFlight) and acks nothing until unstuck.
	var (
		delivered = make([]uint8, attempts)
		received  atomic.Int64
		unstick   = make(chan struct{})
		consumed  = make(chan struct{})
	)
	go func() {
		defer close(consumed)
		var held []*message.Message
		stuck := unstick
		for {
			select {
			case <-stuck:
				for _, h := range held {
					h.Ack()
				}
				held, stuck = nil, nil
			case m, ok := <-ch:
				if !ok {
					return
				}
				i, _ := strconv.Atoi(m.UUID)
				delivered[i]++
				received.Add(1)
				if stuck != nil {
					held = append(held, m)
				} else {
					m.Ack()
				}
			}
		}
	}()

	// Sample goroutines and heap throughout.
	var peakHeap uint64
	var peakG int
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		peakG = max(peakG, runtime.NumGoroutine())
	}
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	accepted := make([]bool, attempts)
	var nAccepted, nDropped atomic.Int64
	payload := []byte(strings.Repeat("e", 100))
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < attempts; i += publishers {
				err := b.Publish("logs", message.NewMessage(strconv.Itoa(i), payload))
				switch {
				case err == nil:
					accepted[i] = true
					nAccepted.Add(1)
				case errors.Is(err, bus.ErrFull):
					nDropped.Add(1)
				default:
					t.Errorf("publish %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()

	st := b.Stats()
	if nAccepted.Load() != capacity || st.DepthEvents != capacity {
		t.Errorf("stuck: accepted %d, depth %d, want %d", nAccepted.Load(), st.DepthEvents, capacity)
	}
	eventually(t, "the stuck subscriber holds a full window", func() bool {
		return received.Load() == int64(b.Config().MaxInFlight)
	})

	close(unstick)
	drain(t, b)
	close(stopSampling)
	<-sampled
	sample()

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	<-consumed

	t.Logf("accepted %d, dropped %d; peak heap +%.1f MiB, peak goroutines %d (baseline %d)",
		nAccepted.Load(), nDropped.Load(), float64(peakHeap-min(peakHeap, baseHeap))/(1<<20), peakG, baseG)
	if peakHeap > baseHeap+heapBound {
		t.Errorf("peak heap %d MiB over a baseline of %d MiB", (peakHeap-baseHeap)>>20, baseHeap>>20)
	}
	if peakG > baseG+gBound {
		t.Errorf("peak goroutines %d, baseline %d", peakG, baseG)
	}

	st = b.Stats()
	if nAccepted.Load()+nDropped.Load() != attempts {
		t.Errorf("accepted %d + dropped %d != %d", nAccepted.Load(), nDropped.Load(), attempts)
	}
	if st.Published != nAccepted.Load() || st.Dropped[bus.ReasonQueueFull] != nDropped.Load() {
		t.Errorf("stats disagree with Publish: %+v", st)
	}
	var once, twice, unasked int
	for i := range attempts {
		switch {
		case delivered[i] > 1:
			twice++
		case delivered[i] == 1 && accepted[i]:
			once++
		case delivered[i] == 1:
			unasked++
		}
	}
	if once != int(nAccepted.Load()) || twice != 0 || unasked != 0 || b.Undelivered() != 0 {
		t.Errorf("delivered once %d (want %d), more than once %d, not accepted but delivered %d, undelivered %d",
			once, nAccepted.Load(), twice, unasked, b.Undelivered())
	}
}

// TestGoroutinesFlatWithManyInFlight holds 10,000 messages unacked in one subscription: the bus
// still runs one goroutine for it.
func TestGoroutinesFlatWithManyInFlight(t *testing.T) {
	const n = 10_000
	b := newBus(t, bus.Config{MaxEvents: n, MaxInFlight: n})
	before := runtime.NumGoroutine()
	ch := subscribe(t, b, context.Background(), "logs")
	publishN(t, b, "logs", n)
	held := make([]*message.Message, 0, n)
	for range n {
		held = append(held, receive(t, ch))
	}
	if g := runtime.NumGoroutine(); g > before+1 {
		t.Fatalf("%d goroutines with %d in flight, %d before subscribing", g, n, before)
	}
	// The last hand-out is counted just after the receive.
	eventually(t, "all in flight", func() bool { return b.Stats().InFlight == n })
	for _, m := range held {
		m.Ack()
	}
	drain(t, b)
}

// TestRouter runs the bus under a Watermill Router whose handler fails the first attempt of every
// tenth message: everything is handled, the failures after a redelivery.
func TestRouter(t *testing.T) {
	b := newBus(t, bus.Config{RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond})
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		handled = map[string]int{}
		failed  = map[string]bool{}
	)
	r.AddConsumerHandler("sink", "logs", b, func(m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if i, _ := strconv.Atoi(m.UUID); i%10 == 0 && !failed[m.UUID] {
			failed[m.UUID] = true
			return fmt.Errorf("first attempt of %s fails", m.UUID)
		}
		handled[m.UUID]++
		return nil
	})
	go func() { _ = r.Run(context.Background()) }()
	<-r.Running()

	const n = 1000
	for i := range n {
		if err := b.Publisher(bus.Block).Publish("logs", msg(strconv.Itoa(i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, b)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != n {
		t.Fatalf("handled %d of %d", len(handled), n)
	}
	for id, c := range handled {
		if c != 1 {
			t.Fatalf("%s handled %d times", id, c)
		}
	}
	if st := b.Stats(); st.Redelivered != n/10 {
		t.Fatalf("redelivered %d, want %d", st.Redelivered, n/10)
	}
}
