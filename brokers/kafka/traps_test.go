package kafka_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/brokers/kafka"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/internal/testenv"
)

func TestParseURL(t *testing.T) {
	for url, want := range map[string][]string{
		"127.0.0.1:9092":               {"127.0.0.1:9092"},
		" kafka-1:9092 , kafka-2:9093": {"kafka-1:9092", "kafka-2:9093"},
		"[::1]:9092":                   {"[::1]:9092"},
	} {
		got, err := kafka.ParseURL(url)
		if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("ParseURL(%q) = %q, %v; want %q", url, got, err, want)
		}
	}
	for _, url := range []string{"", "localhost", "host:", ":9092", "a:9092,,b:9092", "kafka://h:9092", "h:99999", "h:port"} {
		_, err := kafka.ParseURL(url)
		if err == nil || !strings.Contains(err.Error(), "bus.url "+strconv.Quote(url)) {
			t.Errorf("ParseURL(%q): error %v, want one naming bus.url and its value", url, err)
		}
	}
}

func TestOpenNamesBusURLWhenNoBrokerAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := kafka.Open(ctx, "127.0.0.1:1", kafka.DefaultSettings(), nil)
	if err == nil || !strings.Contains(err.Error(), `bus.url "127.0.0.1:1"`) {
		t.Errorf("Open: %v, want an error naming bus.url", err)
	}
}

// The section bus.kafka comes from YAML and SLUICE_BUS_KAFKA_* variables, with this package's defaults,
// and its errors name bus.kafka.<key>.
func TestSettingsInTheConfiguration(t *testing.T) {
	if got := *config.Default().Sinks["bus.kafka"].(*kafka.Settings); got != kafka.DefaultSettings() {
		t.Errorf("the configuration's bus.kafka %+v differs from kafka.DefaultSettings %+v", got, kafka.DefaultSettings())
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("bus:\n  driver: kafka\n  url: 10.0.0.1:9092\n  kafka:\n    partitions: 12\n    instance_id: worker-0\n")
	c, err := config.Load(file, []string{"SLUICE_BUS_KAFKA_SESSION_TIMEOUT=20s"})
	if err != nil {
		t.Fatal(err)
	}
	s := c.BusSettings().(kafka.Settings)
	if s.Partitions != 12 || s.InstanceID != "worker-0" || s.SessionTimeout != 20*time.Second || s.MaxInFlight != 32 {
		t.Errorf("bus.kafka = %+v", s)
	}
	write("bus:\n  driver: kafka\n  url: 10.0.0.1:9092\n  kafka:\n    partitions: 0\n    compression: brotli\n    replication_factor: 0\n    heartbeat_interval: 20s\n")
	_, err = config.Load(file, nil)
	for _, key := range []string{"bus.kafka.partitions", "bus.kafka.compression", "bus.kafka.replication_factor", "bus.kafka.heartbeat_interval"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v, want one naming %s", err, key)
		}
	}
}

// Kafka's traps, each shown not to bite.

// A Kafka producer's acks default to the leader alone in some clients, and retries without
// idempotence can write a record twice: this one waits for every in-sync replica, idempotently.
func TestProducerWaitsForAllReplicasIdempotently(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	cl := kafka.ProducerClient(open(t, k.Addr(), kafka.DefaultSettings()))
	if got := cl.OptValue(kgo.RequiredAcks); got != kgo.AllISRAcks() {
		t.Errorf("RequiredAcks = %v, want all in-sync replicas", got)
	}
	if cl.OptValue(kgo.DisableIdempotentWrite) != false {
		t.Error("the producer is not idempotent")
	}
}

// A new consumer group starts at the newest offset in some clients (sarama's default) and skips what
// is there: here a group that was never declared still gets what was published before it joined.
func TestUndeclaredGroupReadsFromTheStart(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	b := open(t, k.Addr(), testSettings())
	topic, g := brokertest.Names(t, "late")
	if err := b.Declare(context.Background(), topic, nil); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := take(t, subscribe(t, b, g[0], topic), 1, 30*time.Second)
	if got[0] != sent.UUID {
		t.Errorf("got %s, want %s", got[0], sent.UUID)
	}
}

// A nack blocks its partition in watermill-kafka: here the other messages of the partition go on while
// the nacked one waits for its redelivery.
func TestNackDoesNotBlockThePartition(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	s := testSettings()
	s.Partitions = 1
	s.RedeliveryDelay = 2 * time.Second
	b := open(t, k.Addr(), s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
			t.Fatal(err)
		}
	}
	ch := subscribe(t, b, g[0], topic)
	var order []string
	for len(order) < 4 {
		select {
		case m := <-ch:
			if len(order) == 0 {
				m.Nack()
			} else {
				m.Ack()
			}
			order = append(order, m.UUID)
		case <-time.After(30 * time.Second):
			t.Fatalf("received %d of 4 deliveries", len(order))
		}
	}
	if order[3] != order[0] || order[1] == order[0] || order[2] == order[0] {
		t.Errorf("deliveries %v: want the two others before the nacked one again", order)
	}
}

// After a kill -9 of a consumer, what it acknowledged (and was committed) is not delivered again, and
// everything it held unacknowledged goes to another member of its group once the session times out.
func TestKilledConsumerHandsOverWhatItHeldAndOnlyThat(t *testing.T) {
	killedConsumer(t, "", 0, 36*time.Second)
}

// With static membership, the worker restarted after a kill -9 (the same instance_id) gets its
// partitions back at once, not after the session timeout (2 minutes here, twice what the test waits).
func TestRestartedStaticMemberGetsItsPartitionsBackAtOnce(t *testing.T) {
	killedConsumer(t, "worker-0", 2*time.Minute, time.Minute)
}

// killedConsumer runs a consumer in a process of its own (this test binary, see TestHelperConsumer):
// it acknowledges 8 chunks, which are committed, then holds 12 unacknowledged, and is killed with
// SIGKILL. A member started in this process (with instanceID, when set) must then get exactly the 12
// within wait.
func killedConsumer(t *testing.T, instanceID string, sessionTimeout, wait time.Duration) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	s := testSettings()
	s.InstanceID = instanceID
	if sessionTimeout > 0 {
		s.SessionTimeout = sessionTimeout
	}
	b := open(t, k.Addr(), s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperConsumer$", "-test.v")
	helper.Env = append(os.Environ(), "SLUICE_KAFKA_HELPER="+strings.Join([]string{k.Addr(), topic, g[0], instanceID, s.SessionTimeout.String()}, ","))
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(prefix string, n int) map[string]bool {
		t.Helper()
		seen := map[string]bool{}
		for len(seen) < n {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the helper consumer ended having reported %d of %d %q", len(seen), n, prefix)
				}
				if id, ok := strings.CutPrefix(l, prefix+" "); ok {
					seen[id] = true
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("the helper consumer reported %d of %d %q within 60 s", len(seen), n, prefix)
			}
		}
		return seen
	}
	publishN := func(n int, mark string) {
		for range n {
			m := brokertest.Chunk(1)
			m.Metadata.Set("x-test", mark)
			if err := b.Publisher().Publish(topic, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect("subscribed", 1)
	publishN(8, "ack")
	acked := expect("acked", 8)
	waitCommitted(t, k.Addr(), g[0], 8)
	publishN(12, "hold")
	held := expect("held", 12)
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	got := take(t, subscribe(t, b, g[0], topic), 12, wait)
	for _, id := range got {
		if acked[id] {
			t.Errorf("%s, acknowledged and committed before the kill, was delivered again", id)
		}
		delete(held, id)
	}
	if len(held) > 0 {
		t.Errorf("%d held messages never reached the other member", len(held))
	}
}

// waitCommitted waits until group has committed offsets that sum to n.
func waitCommitted(t *testing.T, addr, group string, n int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var sum int64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		offsets, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			continue
		}
		sum = 0
		offsets.Each(func(o kadm.OffsetResponse) { sum += o.At })
		if sum == n {
			return
		}
	}
	t.Fatalf("group %s committed %d offsets within 30 s, want %d", group, sum, n)
}

// TestHelperConsumer is the consumer that killedConsumer runs and kills: it acknowledges the chunks
// marked "ack" and holds the others, and reports each on stdout. It is skipped in a normal run.
func TestHelperConsumer(t *testing.T) {
	env := os.Getenv("SLUICE_KAFKA_HELPER")
	if env == "" {
		t.Skip("run by the kill -9 tests")
	}
	f := strings.Split(env, ",")
	s := testSettings()
	s.InstanceID = f[3]
	s.SessionTimeout, _ = time.ParseDuration(f[4])
	b := open(t, f[0], s)
	ch := subscribe(t, b, f[2], f[1])
	os.Stdout.WriteString("subscribed x\n")
	for m := range ch {
		if m.Metadata.Get("x-test") == "ack" {
			m.Ack()
			os.Stdout.WriteString("acked " + m.UUID + "\n")
		} else {
			os.Stdout.WriteString("held " + m.UUID + "\n")
		}
	}
}

// A broker killed with kill -9 keeps what it acknowledged; a publish while it is down waits and
// succeeds once it is back; the group then gets every message once.
func TestBrokerKilledAndRestarted(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	b := open(t, k.Addr(), testSettings())
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Publish(t, b, topic, 10, 5)
	k.Kill()
	during := brokertest.Chunk(5)
	sent[during.UUID] = true
	published := make(chan error, 1)
	go func() { published <- b.Publisher().Publish(topic, during) }()
	time.Sleep(2 * time.Second)
	k.Start()
	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("a publish while the broker was down: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a publish while the broker was down did not return within 60 s of its restart")
	}
	ch := subscribe(t, b, g[0], topic)
	for _, id := range take(t, ch, len(sent), 60*time.Second) {
		if !sent[id] {
			t.Errorf("unexpected message %s", id)
		}
	}
	if extra := takeFor(ch, 2*time.Second); len(extra) != 0 {
		t.Errorf("%d more messages arrived: %v", len(extra), extra)
	}
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

// take acks and returns the UUIDs of n messages, failing the test if they do not come within wait or a
// UUID comes twice.
func take(t *testing.T, ch <-chan *message.Message, n int, wait time.Duration) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	deadline := time.After(wait)
	for len(ids) < n {
		select {
		case m := <-ch:
			m.Ack()
			if seen[m.UUID] {
				t.Errorf("%s delivered twice", m.UUID)
			}
			seen[m.UUID] = true
			ids = append(ids, m.UUID)
		case <-deadline:
			t.Fatalf("received %d of %d messages within %s", len(ids), n, wait)
		}
	}
	return ids
}

// takeFor acks and returns what arrives within d.
func takeFor(ch <-chan *message.Message, d time.Duration) []string {
	var ids []string
	deadline := time.After(d)
	for {
		select {
		case m := <-ch:
			m.Ack()
			ids = append(ids, m.UUID)
		case <-deadline:
			return ids
		}
	}
}

// A subscription that closes commits what it acknowledged (here the periodic commit never comes): the
// next member gets only the rest.
func TestClosedConsumerCommitsWhatItAcknowledged(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{})
	s := testSettings()
	s.CommitInterval = time.Hour
	b := open(t, k.Addr(), s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
			t.Fatal(err)
		}
	}
	first, err := b.Subscriber(g[0])
	if err != nil {
		t.Fatal(err)
	}
	ch, err := first.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	take(t, ch, 5, 30*time.Second)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	last := brokertest.Chunk(1)
	if err := b.Publisher().Publish(topic, last); err != nil {
		t.Fatal(err)
	}
	if got := take(t, subscribe(t, b, g[0], topic), 1, 30*time.Second); got[0] != last.UUID {
		t.Errorf("the next member got %s first, want %s (the one published after the close)", got[0], last.UUID)
	}
}
