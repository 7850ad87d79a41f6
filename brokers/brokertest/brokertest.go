// Package brokertest is the conformance suite every broker driver runs (brokers.Broker): what sluice
// relies on a broker for, checked against the real broker.
package brokertest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// Options tune the suite to a broker.
type Options struct {
	// Redelivery is how long a message whose consumer went away (its subscription closed without an
	// ack) may take to be offered to another member of its group; 0 means 30 s.
	Redelivery time.Duration
	// Wait bounds every other wait for a message; 0 means 30 s.
	Wait time.Duration
	// OneUnackedPerSubscription says that a subscription hands out one message at a time (a stock
	// Watermill subscriber): a worker's batch then holds one chunk, and the suite skips
	// BatchSubscriberGathersSeveralChunks.
	OneUnackedPerSubscription bool
	// MaxChunkBytes is the largest chunk the broker must carry whole; 0 means 1 MiB. A web node's
	// chunks are at most bus.forward.chunk.max_bytes (512 KiB by default) plus one event, so a broker
	// set up by someone else (a stock Kafka topic, 1 MB by default) may be tested at that.
	MaxChunkBytes int
}

// Open opens a new broker for one test; every call of one test must reach the same broker server.
type Open func(t *testing.T) brokers.Broker

// Run runs the suite. Each test uses topics and groups of its own, named after the test.
func Run(t *testing.T, open Open, o Options) {
	if o.Redelivery <= 0 {
		o.Redelivery = 30 * time.Second
	}
	if o.Wait <= 0 {
		o.Wait = 30 * time.Second
	}
	t.Run("DeclaredGroupsGetWhatWasPublishedBeforeTheySubscribed", func(t *testing.T) { declared(t, open, o) })
	t.Run("UUIDMetadataAndPayloadArriveUnchanged", func(t *testing.T) { unchanged(t, open, o) })
	t.Run("ALargeChunkArrivesWhole", func(t *testing.T) { large(t, open, o) })
	t.Run("EveryGroupGetsEveryMessage", func(t *testing.T) { groups(t, open, o) })
	t.Run("MembersOfOneGroupShare", func(t *testing.T) { members(t, open, o) })
	t.Run("NackedIsOfferedAgain", func(t *testing.T) { nacked(t, open, o) })
	t.Run("UnackedGoesToAnotherMemberWhenItsConsumerCloses", func(t *testing.T) { handover(t, open, o) })
	t.Run("CloseWhilePublishing", func(t *testing.T) { closeWhilePublishing(t, open) })
	t.Run("BatchSubscriberGathersSeveralChunks", func(t *testing.T) { gathered(t, open, o) })
}

// Names returns a topic and group names unique to the test.
func Names(t testing.TB, groups ...string) (topic string, out []string) {
	base := fmt.Sprintf("sluicetest_%d", time.Now().UnixNano())
	for _, g := range groups {
		out = append(out, base+"_"+g)
	}
	return base, out
}

// Chunk returns a chunk message of n small events, as sluice publishes them.
func Chunk(n int) *message.Message {
	var payload []byte
	for i := range n {
		payload = append(payload, fmt.Sprintf(`{"id":%q,"ts":"2026-12-02T10:00:00Z","level":"INFO","kind":"app","message":"m%d"}`+"\n", event.NewID(), i)...)
	}
	msg := message.NewMessage(event.NewID().String(), payload)
	msg.Metadata.Set(event.MetadataEvents, strconv.Itoa(n))
	msg.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	return msg
}

func publish(t testing.TB, b brokers.Broker, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := b.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func subscribe(t testing.TB, b brokers.Broker, group, topic string) <-chan *message.Message {
	t.Helper()
	_, ch := Subscribe(t, b, group, topic)
	return ch
}

// receive takes n messages from ch (acking each when ack), within wait.
func receive(t testing.TB, ch <-chan *message.Message, n int, ack bool, wait time.Duration) []*message.Message {
	t.Helper()
	var out []*message.Message
	deadline := time.After(wait)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("subscription ended after %d of %d messages", len(out), n)
			}
			if ack {
				m.Ack()
			}
			out = append(out, m)
		case <-deadline:
			t.Fatalf("received %d of %d messages within %s", len(out), n, wait)
		}
	}
	return out
}

func declare(t testing.TB, b brokers.Broker, topic string, groups []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Declare(ctx, topic, groups); err != nil {
		t.Fatalf("Declare(%s, %v): %v", topic, groups, err)
	}
	if err := b.Declare(ctx, topic, groups); err != nil {
		t.Fatalf("Declare a second time (it must be idempotent): %v", err)
	}
}

func declared(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	want := map[string]bool{}
	for range 5 {
		m := Chunk(3)
		want[m.UUID] = true
		publish(t, b, topic, m)
	}
	ch := subscribe(t, b, g[0], topic)
	for _, m := range receive(t, ch, 5, true, o.Wait) {
		if !want[m.UUID] {
			t.Errorf("unexpected or repeated message %s", m.UUID)
		}
		delete(want, m.UUID)
	}
}

func unchanged(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	sent := Chunk(50)
	sent.Metadata.Set("x-extra", "kept")
	publish(t, b, topic, sent)
	ch := subscribe(t, b, g[0], topic)
	got := receive(t, ch, 1, true, o.Wait)[0]
	if got.UUID != sent.UUID {
		t.Errorf("UUID = %s, want %s", got.UUID, sent.UUID)
	}
	for _, k := range []string{event.MetadataEvents, event.MetadataFormat, "x-extra"} {
		if got.Metadata.Get(k) != sent.Metadata.Get(k) {
			t.Errorf("metadata %s = %q, want %q", k, got.Metadata.Get(k), sent.Metadata.Get(k))
		}
	}
	if string(got.Payload) != string(sent.Payload) {
		t.Errorf("payload changed: %d bytes, want %d", len(got.Payload), len(sent.Payload))
	}
	events, bad := event.Decode(got.Payload)
	if len(events) != 50 || len(bad) != 0 {
		t.Errorf("decoded %d events and %d bad lines, want 50 and 0", len(events), len(bad))
	}
}

// large sends a chunk as large as a web node seals by default (bus.forward.chunk.max_bytes, 1 MiB).
func large(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	limit := o.MaxChunkBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	sent := Chunk(1)
	for len(sent.Payload) < limit-200 {
		sent.Payload = append(sent.Payload, Chunk(1).Payload...)
	}
	publish(t, b, topic, sent)
	got := receive(t, subscribe(t, b, g[0], topic), 1, true, o.Wait)[0]
	if got.UUID != sent.UUID || string(got.Payload) != string(sent.Payload) {
		t.Errorf("got %s with %d bytes, want %s with %d bytes", got.UUID, len(got.Payload), sent.UUID, len(sent.Payload))
	}
}

func groups(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "pg", "blob")
	declare(t, b, topic, g)
	for range 10 {
		publish(t, b, topic, Chunk(1))
	}
	for _, group := range g {
		ch := subscribe(t, b, group, topic)
		receive(t, ch, 10, true, o.Wait)
	}
}

func members(t *testing.T, open Open, o Options) {
	b1, b2 := open(t), open(t) // two processes' members of one group
	topic, g := Names(t, "a")
	declare(t, b1, topic, g)
	ch1 := subscribe(t, b1, g[0], topic)
	ch2 := subscribe(t, b2, g[0], topic)
	const n = 20
	sent := map[string]bool{}
	for range n {
		m := Chunk(1)
		sent[m.UUID] = true
		publish(t, b1, topic, m)
	}
	got := map[string]int{}
	deadline := time.After(o.Wait)
	for len(got) < n {
		select {
		case m := <-ch1:
			m.Ack()
			got[m.UUID]++
		case m := <-ch2:
			m.Ack()
			got[m.UUID]++
		case <-deadline:
			t.Fatalf("the group's two members received %d of %d messages within %s", len(got), n, o.Wait)
		}
	}
	// A message acknowledged by one member is not offered to the other.
	select {
	case m := <-ch1:
		got[m.UUID]++
	case m := <-ch2:
		got[m.UUID]++
	case <-time.After(time.Second):
	}
	for id, k := range got {
		if !sent[id] || k != 1 {
			t.Errorf("message %s received %d times (sent: %v), want once", id, k, sent[id])
		}
	}
}

func nacked(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	sent := Chunk(2)
	publish(t, b, topic, sent)
	ch := subscribe(t, b, g[0], topic)
	first := receive(t, ch, 1, false, o.Wait)[0]
	first.Nack()
	again := receive(t, ch, 1, true, o.Redelivery+o.Wait)[0]
	if again.UUID != sent.UUID {
		t.Errorf("offered again %s, want %s", again.UUID, sent.UUID)
	}
}

func handover(t *testing.T, open Open, o Options) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	sent := Chunk(2)
	publish(t, b, topic, sent)
	s1, err := b.Subscriber(g[0])
	if err != nil {
		t.Fatal(err)
	}
	ch1, err := s1.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch1, 1, false, o.Wait) // neither acked nor nacked: its consumer goes away
	var wg sync.WaitGroup
	wg.Go(func() { _ = s1.Close() })
	other := open(t) // another process's member of the group
	ch2 := subscribe(t, other, g[0], topic)
	got := receive(t, ch2, 1, true, o.Redelivery+o.Wait)[0]
	if got.UUID != sent.UUID {
		t.Errorf("the other member got %s, want %s", got.UUID, sent.UUID)
	}
	wg.Wait()
}

// closeWhilePublishing closes a broker while four goroutines publish (as a web node's forwarder
// does): no data race (run the suite with -race), and Close returns.
func closeWhilePublishing(t *testing.T, open Open) {
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				_ = b.Publisher().Publish(topic, Chunk(1))
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}

// gathered checks what a worker relies on: a subscription hands out several chunks unacknowledged at
// once, so that subscribers.BatchSubscriber gathers more than one into a sink batch, and acking a
// batch acks each of its chunks (none is offered again).
func gathered(t *testing.T, open Open, o Options) {
	if o.OneUnackedPerSubscription {
		t.Skip("the driver hands out one message at a time per subscription: a batch holds one chunk")
	}
	b := open(t)
	topic, g := Names(t, "a")
	declare(t, b, topic, g)
	const chunks, events = 5, 10
	for range chunks {
		publish(t, b, topic, Chunk(events))
	}
	s, err := b.Subscriber(g[0])
	if err != nil {
		t.Fatal(err)
	}
	bs, err := subscribers.NewBatchSubscriber(s, subscribers.BatchPolicy{MaxEvents: chunks * events, MaxBytes: 1 << 20, MaxWait: 2 * time.Second, MaxConcurrentWrites: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := bs.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for got := 0; got < chunks*events; {
		batch := receive(t, ch, 1, false, o.Wait)[0]
		n, _ := strconv.Atoi(batch.Metadata.Get(event.MetadataEvents))
		sizes, got = append(sizes, n), got+n
		batch.Ack()
	}
	if sizes[0] < 2*events {
		t.Errorf("batches of %v events: the first holds one chunk, want several (chunks of %d events)", sizes, events)
	}
	select {
	case m := <-ch:
		t.Errorf("a batch of %s events came after all %d were acked", m.Metadata.Get(event.MetadataEvents), chunks*events)
	case <-time.After(time.Second):
	}
}
