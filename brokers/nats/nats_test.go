package nats_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsio "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/brokers/nats"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
)

// cleaned is a broker whose declared streams are deleted when the test ends, after it is closed
// (a subscription still open would declare a lost stream again).
type cleaned struct {
	*nats.Broker
	js     jetstream.JetStream
	topics *[]string
}

func (c cleaned) Declare(ctx context.Context, topic string, groups []string) error {
	*c.topics = append(*c.topics, topic)
	return c.Broker.Declare(ctx, topic, groups)
}

func openAt(t testing.TB, url string, s nats.Settings) cleaned {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := cleaned{js: jetStream(t, url), topics: new([]string)}
	t.Cleanup(func() { // after Close below, and after the Close of every broker opened later
		for _, topic := range *c.topics {
			_ = c.js.DeleteStream(context.Background(), nats.StreamName(topic))
		}
	})
	b, err := nats.Open(ctx, url, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c.Broker = b
	return c
}

func open(t testing.TB, s nats.Settings) cleaned { return openAt(t, testenv.NATS(t), s) }

func jetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := natsio.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// The conformance suite, with the default settings: a closed member's messages are naked (delivered
// again at once), a nacked one after nack_delay.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokers.Broker { return open(t, nats.DefaultSettings()) },
		brokertest.Options{Redelivery: 15 * time.Second})
}

func subscribe(t *testing.T, b brokers.Broker, group, topic string) <-chan *message.Message {
	t.Helper()
	s, err := b.Subscriber(group)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func receive(t *testing.T, ch <-chan *message.Message, wait time.Duration) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
		return nil
	}
}

// nothing checks that no message comes within wait.
func nothing(t *testing.T, ch <-chan *message.Message, wait time.Duration, why string) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("got %s %s", m.UUID, why)
	case <-time.After(wait):
	}
}

func declared(t *testing.T, b brokers.Broker, groups ...string) (string, []string) {
	t.Helper()
	topic, g := brokertest.Names(t, groups...)
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	return topic, g
}

func publish(t *testing.T, b brokers.Broker, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := b.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

// The trap of watermill-nats pkg/nats: a clean Close deleted the durable consumer, and the next start
// replayed the stream. Here a member that closes leaves the consumer, and the next one gets only what
// is new.
func TestCloseKeepsTheDurableConsumer(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	for range 10 {
		publish(t, b, topic, brokertest.Chunk(1))
	}
	s, err := b.Subscriber(g[0])
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		receive(t, ch, 30*time.Second).Ack()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Consumer(context.Background(), nats.StreamName(topic), nats.ConsumerName(g[0])); err != nil {
		t.Fatalf("the durable consumer is gone after Close: %v", err)
	}
	next := brokertest.Chunk(1)
	publish(t, b, topic, next)
	ch2 := subscribe(t, open(t, nats.DefaultSettings()), g[0], topic)
	if m := receive(t, ch2, 30*time.Second); m.UUID != next.UUID {
		t.Fatalf("the next member got %s first, want only the new %s", m.UUID, next.UUID)
	} else {
		m.Ack()
	}
	nothing(t, ch2, time.Second, "replayed")
}

// A publish retried with the same message (its ack was lost, the web node tries again) is stored
// once: Nats-Msg-Id is the message's UUID.
func TestRepublishedMessageIsStoredOnce(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	m := brokertest.Chunk(2)
	publish(t, b, topic, m)
	publish(t, b, topic, m.Copy())
	info, err := b.js.Stream(context.Background(), nats.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("the stream holds %d messages, want 1", n)
	}
	ch := subscribe(t, b, g[0], topic)
	receive(t, ch, 30*time.Second).Ack()
	nothing(t, ch, time.Second, "twice")
}

// A member killed with kill -9 holds messages that nobody acknowledges: after ack_wait JetStream
// delivers them to a live member.
func TestDeadMembersMessagesAreRedelivered(t *testing.T) {
	s := nats.DefaultSettings()
	s.AckWait = time.Second
	b := open(t, s)
	topic, g := declared(t, b, "a")
	sent := brokertest.Chunk(3)
	publish(t, b, topic, sent)
	// The dead member: its own connection pulls the message, and is gone without a word.
	nc, err := natsio.Connect(testenv.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	c, err := js.Consumer(context.Background(), nats.StreamName(topic), nats.ConsumerName(g[0]))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if m := <-batch.Messages(); m == nil || m.Headers().Get(natsio.MsgIdHdr) != sent.UUID {
		t.Fatalf("the dead member pulled %v, want %s", m, sent.UUID)
	}
	nc.Close()
	m := receive(t, subscribe(t, b, g[0], topic), 30*time.Second)
	if m.UUID != sent.UUID {
		t.Fatalf("got %s, want %s", m.UUID, sent.UUID)
	}
	m.Ack()
}

// A live member that holds a message longer than ack_wait (a slow batch) keeps it: its heartbeat
// (+WPI) restarts the ack wait, so the message is not delivered again.
func TestLiveMemberKeepsItsMessages(t *testing.T) {
	s := nats.DefaultSettings()
	s.AckWait = 4 * time.Second
	b := open(t, s)
	topic, g := declared(t, b, "a")
	publish(t, b, topic, brokertest.Chunk(1))
	ch := subscribe(t, b, g[0], topic)
	held := receive(t, ch, 30*time.Second)
	other := subscribe(t, open(t, s), g[0], topic)
	select {
	case m := <-other:
		t.Fatalf("the other member got %s while a live member held it", m.UUID)
	case m := <-ch:
		t.Fatalf("the holder got %s again while it held it", m.UUID)
	case <-time.After(2*s.AckWait + 2*time.Second):
	}
	held.Ack()
	nothing(t, other, 2*time.Second, "after it was acknowledged")
}

// Interest retention: the stream keeps a message until every group has acknowledged it, and then
// removes it.
func TestStreamKeepsWhatAGroupHasNotAcknowledged(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "fast", "slow")
	for range 5 {
		publish(t, b, topic, brokertest.Chunk(1))
	}
	msgs := func() uint64 {
		st, err := b.js.Stream(context.Background(), nats.StreamName(topic))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	fast := subscribe(t, b, g[0], topic)
	for range 5 {
		receive(t, fast, 30*time.Second).Ack() // DoubleAck: the server has it when Ack returns... in the background
	}
	time.Sleep(500 * time.Millisecond) // the acks are confirmed in the subscription's goroutines
	if n := msgs(); n != 5 {
		t.Fatalf("the stream holds %d messages after one group acknowledged them, want 5", n)
	}
	slow := subscribe(t, b, g[1], topic)
	for range 5 {
		receive(t, slow, 30*time.Second).Ack()
	}
	deadline := time.Now().Add(30 * time.Second)
	for msgs() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d messages after every group acknowledged them, want 0", msgs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill -9 of nats-server (a server of this test's own, file storage in a temporary directory): every
// acknowledged publish is there after the restart, and every message not acknowledged by the group
// is delivered.
func TestServerKilledLosesNothingAcknowledged(t *testing.T) {
	srv := testenv.StartServer(t, "nats-server", func(port int, dir string) []string {
		return []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", dir, "-l", filepath.Join(dir, "log")}
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", srv.Port)
	s := nats.DefaultSettings()
	s.AckWait = 2 * time.Second
	brokertest.SurvivesKill(t, func(t *testing.T) brokers.Broker { return openAt(t, url, s) }, func() { srv.Kill(); srv.Start() })
}

// reading subscribes a member of group to topic and reads a chunk through the subscription.
func reading(t *testing.T, b brokers.Broker, group, topic string) <-chan *message.Message {
	t.Helper()
	ch := subscribe(t, b, group, topic)
	publish(t, b, topic, brokertest.Chunk(1))
	receive(t, ch, 30*time.Second).Ack()
	return ch
}

// loseStream deletes topic's stream and with it its consumers, as a NATS whose store was wiped
// loses them.
func loseStream(t *testing.T, b cleaned, topic string) {
	t.Helper()
	if err := b.js.DeleteStream(context.Background(), nats.StreamName(topic)); err != nil {
		t.Fatal(err)
	}
}

// publishChunk publishes a chunk of one event to topic and returns it.
func publishChunk(t *testing.T, b brokers.Broker, topic string) *message.Message {
	t.Helper()
	sent := brokertest.Chunk(1)
	publish(t, b, topic, sent)
	return sent
}

// arrives checks that sent is the next message on ch, and acknowledges it.
func arrives(t *testing.T, ch <-chan *message.Message, sent *message.Message) {
	t.Helper()
	m := receive(t, ch, 30*time.Second)
	if m.UUID != sent.UUID {
		t.Fatalf("got %s, want %s", m.UUID, sent.UUID)
	}
	m.Ack()
}

// A NATS whose store was wiped lost the stream and its consumers: the publisher declares them again
// (with every group declared so far, since interest retention keeps only what a consumer will read),
// and the subscription reads on. Here the subscription's pull request pending at the delete is
// released (409 Consumer Deleted) while the server is still removing the stream's files, and the
// publish after the delete meets the loss too: both declare again, after lossSettle.
func TestLostStreamIsDeclaredAgain(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	ch := reading(t, b, g[0], topic)
	loseStream(t, b, topic)
	arrives(t, ch, publishChunk(t, b, topic))
}

// The subscription meets the loss first and declares the stream and its consumer again on its own
// (nobody publishes meanwhile); the next publish is delivered.
func TestLostStreamIsDeclaredAgainBySubscription(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	ch := reading(t, b, g[0], topic)
	loseStream(t, b, topic)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := b.js.Consumer(context.Background(), nats.StreamName(topic), nats.ConsumerName(g[0]))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the subscription did not declare the consumer again within 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	arrives(t, ch, publishChunk(t, b, topic))
}

// The publisher meets the loss first (no subscription is running): it declares the stream and the
// group's consumer again before it publishes, so the next member gets the message.
func TestLostStreamIsDeclaredAgainByPublisher(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	loseStream(t, b, topic)
	sent := publishChunk(t, b, topic)
	arrives(t, subscribe(t, b, g[0], topic), sent)
}

// A member declaring a stream creates it refusing publishes until its consumers exist (interest
// retention would acknowledge a message published before and drop it): a publish that meets such a
// stream declares it too, and its message is delivered.
func TestPublishIntoAStreamBeingDeclared(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	loseStream(t, b, topic)
	// Another member has created the stream again and not yet the consumer.
	if err := nats.CreateClosedStream(context.Background(), b.Broker, topic); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(context.Background(), topic, []byte("xy")); !errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		t.Fatalf("a publish into the stream being declared: %v, want it refused (message size exceeds maximum allowed)", err)
	}
	sent := publishChunk(t, b, topic)
	arrives(t, subscribe(t, b, g[0], topic), sent)
}

// A message larger than the server's max_payload, even compressed, is refused with an error that says what to change.
func TestTooLargeMessageIsRefusedClearly(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, _ := declared(t, b, "a")
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big) // incompressible: a chunk near max_payload is compressed first
	m := message.NewMessage("big", big)
	err := b.Publisher().Publish(topic, m)
	if err == nil || !strings.Contains(err.Error(), "max_payload") || !strings.Contains(err.Error(), "bus.forward.chunk.max_bytes") {
		t.Fatalf("Publish of 2 MiB = %v, want an error naming max_payload and bus.forward.chunk.max_bytes", err)
	}
}

// A message whose driver-compressed payload does not decompress is handed out as it is, marked
// compressed (a worker finds it corrupt and dead-letters it), not a failed fetch that would bring it
// back again and again: the message after it arrives too.
func TestCorruptCompressedMessageIsHandedOut(t *testing.T) {
	b := open(t, nats.DefaultSettings())
	topic, g := declared(t, b, "a")
	nm := natsio.NewMsg(topic)
	nm.Data = []byte("\x28\xb5\x2f\xfd not zstd")
	nm.Header.Set("Sluice-Payload-Encoding", "zstd")
	if _, err := b.js.PublishMsg(context.Background(), nm, jetstream.WithMsgID("corrupt")); err != nil {
		t.Fatal(err)
	}
	good := brokertest.Chunk(2)
	publish(t, b, topic, good)
	ch := subscribe(t, b, g[0], topic)
	first := receive(t, ch, 30*time.Second)
	if first.UUID != "corrupt" || first.Metadata.Get(event.MetadataFormat) != event.ChunkFormatFor(event.EncodingZstd) || string(first.Payload) != string(nm.Data) {
		t.Fatalf("got %s (encoding %q, %d bytes), want the corrupt message as it is, marked zstd", first.UUID, first.Metadata.Get(event.MetadataFormat), len(first.Payload))
	}
	if _, bad := subscribers.Contents(first); len(bad) != 1 {
		t.Errorf("a worker reads %d bad lines from it, want 1", len(bad))
	}
	first.Ack()
	if second := receive(t, ch, 30*time.Second); second.UUID != good.UUID {
		t.Fatalf("got %s, want the good message %s", second.UUID, good.UUID)
	} else {
		second.Ack()
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"sluice.events": "sluice_2Eevents",
		"sluice.pg":     "sluice_2Epg",
		"sluice_pg":     "sluice_5Fpg",
		"a b/c*>":       "a_20b_2Fc_2A_3E",
		"Route-1":       "Route-1",
	} {
		if got := nats.StreamName(in); got != want {
			t.Errorf("StreamName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenRefusesABadURL(t *testing.T) {
	brokertest.RefusesBadURLs(t, nats.Name, map[string]string{
		"":                                "not a NATS URL",
		"127.0.0.1:4222":                  "not a NATS URL",
		"http://127.0.0.1:4222":           "not a NATS URL",
		"nats://127.0.0.1:4222,redis://x": "not a NATS URL",
		"nats://u:hunter2@127.0.0.1:1":    "NATS does not answer",
		"nats://hunter2@127.0.0.1:1":      "NATS does not answer",
		"nats://u:hunter2@[::1:4222":      "not a NATS URL",
		"nats://127.0.0.1:1,nats://u:hunter2@127.0.0.1:2": "NATS does not answer",
	})
}

// The section bus.nats loads from YAML and the environment, and its errors name its keys.
func TestSettingsFromConfig(t *testing.T) {
	c, err := brokertest.LoadConfig(t, "bus:\n  driver: nats\n  url: nats://127.0.0.1:4222\n  nats:\n    replicas: 3\n", []string{"SLUICE_BUS_NATS_ACK_WAIT=15s"})
	if err != nil {
		t.Fatal(err)
	}
	want := nats.DefaultSettings()
	want.Replicas, want.AckWait = 3, 15*time.Second
	if got := c.BusSettings().(nats.Settings); got != want {
		t.Errorf("bus.nats = %+v, want %+v", got, want)
	}
	brokertest.ConfigErrors(t, map[string]string{
		"bus:\n  nats:\n    replicas: 0\n":          "bus.nats.replicas",
		"bus:\n  nats:\n    max_bytes: -1\n":        "bus.nats.max_bytes",
		"bus:\n  nats:\n    duplicate_window: 0s\n": "bus.nats.duplicate_window",
		"bus:\n  nats:\n    ack_wait: 0s\n":         "bus.nats.ack_wait",
		"bus:\n  nats:\n    nack_delay: -2s\n":      "bus.nats.nack_delay",
		"bus:\n  nats:\n    max_in_flight: 0\n":     "bus.nats.max_in_flight",
		"bus:\n  nats:\n    max_ack_pending: 8\n":   "bus.nats.max_ack_pending",
		"bus:\n  nats:\n    storage: memory\n":      "bus.nats.storage",
		"bus:\n  driver: nats\n":                    "bus.url",
	})
}

// go test -run X -bench . ./brokers/nats/: full chunks published (4 at once) and consumed.
func BenchmarkChunks(b *testing.B) {
	brokertest.Bench(b, func(tb testing.TB) brokers.Broker { return open(tb, nats.DefaultSettings()) })
}
