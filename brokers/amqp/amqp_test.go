package amqp

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
)

// testURL is the RabbitMQ the tests use (.ci/run starts it when it is down): SLUICE_TEST_AMQP_URL or
// the local one.
func testURL() string {
	if u := os.Getenv("SLUICE_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func testSettings() Settings {
	s := DefaultSettings()
	s.NackDelay = 200 * time.Millisecond
	return s
}

func open(t testing.TB, s Settings) *Broker {
	t.Helper()
	b, err := Open(context.Background(), testURL(), s, nil)
	if err != nil {
		t.Fatalf("%v (is RabbitMQ running? .ci/run starts it with rabbitmq-server -detached)", err)
	}
	removeAtEnd(t, b)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// removeAtEnd deletes the exchanges and queues that b declares once the test is over: durable queues
// would pile up in the broker, run after run.
func removeAtEnd(t testing.TB, b *Broker) {
	var mu sync.Mutex
	exchanges, queues := map[string]bool{}, map[string]bool{}
	b.declared = func(exchange string, qs []string) {
		mu.Lock()
		defer mu.Unlock()
		exchanges[exchange] = true
		for _, q := range qs {
			queues[q] = true
		}
	}
	t.Cleanup(func() {
		conn, err := amqp091.Dial(testURL())
		if err != nil {
			t.Logf("remove the test's queues: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Logf("remove the test's queues: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for e := range exchanges {
			_ = ch.ExchangeDelete(e, false, false)
		}
	})
}

// The conformance suite against the real RabbitMQ, with the default quorum queues and with classic ones.
func TestConformance(t *testing.T) {
	for _, queueType := range []string{QueueQuorum, QueueClassic} {
		t.Run(queueType, func(t *testing.T) {
			s := testSettings()
			s.QueueType = queueType
			brokertest.Run(t, func(t *testing.T) brokers.Broker { return open(t, s) },
				brokertest.Options{Redelivery: 15 * time.Second})
		})
	}
}

// The driver registers itself, with its settings as the section bus.amqp.
func TestRegistered(t *testing.T) { brokertest.Registered(t, Driver, DefaultSettings()) }

// A bus.url that is no AMQP URL, or a broker that does not answer, fails Open with an error naming
// bus.url, without the password.
func TestOpenNamesBusURL(t *testing.T) {
	brokertest.RefusesURLs(t, Driver, DefaultSettings(), "secret",
		"http://guest:secret@127.0.0.1:5672/",
		"amqp://guest:secret@127.0.0.1:notaport/",
		"amqp://guest:secret@127.0.0.1:1/")
}

// The section bus.amqp comes from YAML and SLUICE_BUS_AMQP_<KEY>, and its errors name the key.
func TestSettingsFromConfiguration(t *testing.T) {
	s := brokertest.SettingErrors(t, Driver, testURL(), []string{"SLUICE_BUS_AMQP_QUEUE_TYPE=classic"}, map[string]string{
		"SLUICE_BUS_AMQP_QUEUE_TYPE=stream":    "bus.amqp.queue_type",
		"SLUICE_BUS_AMQP_PREFETCH=0":           "bus.amqp.prefetch",
		"SLUICE_BUS_AMQP_DELIVERY_LIMIT=-1":    "bus.amqp.delivery_limit",
		"SLUICE_BUS_AMQP_NACK_DELAY=0s":        "bus.amqp.nack_delay",
		"SLUICE_BUS_AMQP_HEARTBEAT=500ms":      "bus.amqp.heartbeat",
		"SLUICE_BUS_AMQP_CONFIRM_TIMEOUT=0s":   "bus.amqp.confirm_timeout",
		"SLUICE_BUS_AMQP_PUBLISH_CHANNELS=0":   "bus.amqp.publish_channels",
		"SLUICE_BUS_AMQP_DELIVERY_LIMIT=ten":   "bus.amqp.delivery_limit",
		"SLUICE_BUS_AMQP_QUEUE_TYPE=":          "bus.amqp.queue_type",
		"SLUICE_BUS_AMQP_PREFETCH=-3":          "bus.amqp.prefetch",
		"SLUICE_BUS_AMQP_PUBLISH_CHANNELS=-1":  "bus.amqp.publish_channels",
		"SLUICE_BUS_AMQP_CONFIRM_TIMEOUT=-1ms": "bus.amqp.confirm_timeout",
	})
	if got := s.(Settings).QueueType; got != QueueClassic {
		t.Errorf("queue_type = %s, want classic", got)
	}
}

// The trap: RabbitMQ drops a message that reaches an exchange with no queue, and still confirms it.
// This driver's Publish says so (ErrUnroutable) instead of returning nil, and once the groups are
// declared the same publish is held.
func TestPublishBeforeDeclareFails(t *testing.T) {
	b := open(t, testSettings())
	topic, g := brokertest.Names(t, "a")
	err := b.Publisher().Publish(topic, brokertest.Chunk(1), brokertest.Chunk(1))
	if !errors.Is(err, ErrUnroutable) {
		t.Fatalf("Publish with no queue bound = %v, want ErrUnroutable", err)
	}
	t.Log(err)
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatalf("Publish after Declare: %v", err)
	}
	if m := next(t, subscribe(t, b, g[0], topic)); m.UUID != sent.UUID {
		t.Errorf("got %s, want %s", m.UUID, sent.UUID)
	}
}

// The group's queue is a quorum queue: declaring it again as a classic one is refused, with an error
// that names bus.amqp.queue_type.
func TestQueuesAreQuorumQueues(t *testing.T) {
	b := open(t, testSettings())
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	classic := testSettings()
	classic.QueueType = QueueClassic
	err := open(t, classic).Declare(context.Background(), topic, g)
	if err == nil || !strings.Contains(err.Error(), "bus.amqp.queue_type") {
		t.Fatalf("Declare of the quorum queue as classic = %v, want a refusal naming bus.amqp.queue_type", err)
	}
	t.Log(err)
}

// A nacked chunk comes back, again and again (more often than RabbitMQ 4's default delivery limit
// of 20), never dropped, and each time only after the nack delay: a failing sink does not spin.
func TestNackedComesBackAfterTheDelayAndIsNeverDropped(t *testing.T) {
	s := testSettings()
	s.NackDelay = 20 * time.Millisecond
	b := open(t, s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, b, g[0], topic)
	start := time.Now()
	const nacks = 25
	for i := range nacks {
		m := next(t, ch)
		if m.UUID != sent.UUID {
			t.Fatalf("delivery %d is %s, want %s", i, m.UUID, sent.UUID)
		}
		m.Nack()
	}
	next(t, ch).Ack()
	if took := time.Since(start); took < nacks*s.NackDelay {
		t.Errorf("%d nacks took %s: the delay of %s was not kept", nacks, took, s.NackDelay)
	}
}

// Publish holds a batch of messages and they all arrive, with their UUIDs.
func TestPublishManyInOneCall(t *testing.T) {
	b := open(t, testSettings())
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	var msgs []*message.Message
	for range 50 {
		m := brokertest.Chunk(2)
		want[m.UUID] = true
		msgs = append(msgs, m)
	}
	if err := b.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, b, g[0], topic)
	for range msgs {
		m := next(t, ch)
		m.Ack()
		if !want[m.UUID] {
			t.Errorf("unexpected or repeated %s", m.UUID)
		}
		delete(want, m.UUID)
	}
}

func subscribe(t *testing.T, b *Broker, group, topic string) <-chan *message.Message {
	t.Helper()
	_, ch := brokertest.Subscribe(t, b, group, topic)
	return ch
}

var next = brokertest.Next

// A redelivery from a quorum queue carries a numeric x-delivery-count header: the chunk is read, its
// UUID and metadata kept, the count as text.
func TestMarshalerReadsNumericHeaders(t *testing.T) {
	sent := brokertest.Chunk(1)
	pub, err := marshaler{}.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	pub.Headers["x-delivery-count"] = int64(3)
	got, err := marshaler{}.Unmarshal(amqp091.Delivery{Headers: pub.Headers, Body: pub.Body})
	if err != nil {
		t.Fatal(err)
	}
	if got.UUID != sent.UUID || string(got.Payload) != string(sent.Payload) || got.Metadata.Get("x-delivery-count") != "3" {
		t.Errorf("got %s %q %v, want %s and the payload sent", got.UUID, got.Payload, got.Metadata, sent.UUID)
	}
}

// A subscription hands out prefetch chunks at once, before any is acked, so that a worker can batch
// them; and concurrent publishes (more than the publishing channels) all arrive.
func TestPrefetchedChunksAreHandedOutAtOnce(t *testing.T) {
	s := testSettings()
	b := open(t, s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	const publishers, each = 8, 5
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for range each {
				if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	ch := subscribe(t, b, g[0], topic)
	var held []*message.Message
	for range s.Prefetch {
		held = append(held, next(t, ch)) // none acked yet
	}
	for _, m := range held {
		m.Ack()
	}
	for range publishers*each - s.Prefetch {
		next(t, ch).Ack()
	}
}

// Chunks of 1,000 events through RabbitMQ: publish, then consume (figures, not asserted).
func BenchmarkBroker(b *testing.B) {
	for _, queueType := range []string{QueueQuorum, QueueClassic} {
		b.Run(queueType, func(b *testing.B) {
			s := DefaultSettings()
			s.QueueType = queueType
			brokertest.Bench(b, func(tb testing.TB) brokers.Broker { return open(tb, s) })
		})
	}
}
