package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/internal/testenv"
)

// testSettings polls often, so that the tests do not wait for the production poll interval.
func testSettings() Settings {
	s := DefaultSettings()
	s.PollInterval = 20 * time.Millisecond
	s.NackDelay = 100 * time.Millisecond
	return s
}

func open(t testing.TB, dsn string, s Settings) *Broker {
	t.Helper()
	b, err := Open(context.Background(), dsn, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// The conformance suite against the real PostgreSQL, a database of its own.
func TestConformance(t *testing.T) {
	dsn := testenv.Postgres(t)
	brokertest.Run(t, func(t *testing.T) brokers.Broker { return open(t, dsn, testSettings()) },
		brokertest.Options{Redelivery: 15 * time.Second, OneUnackedPerSubscription: true})
}

// The driver registers itself, with its settings as the section bus.postgres.
func TestRegistered(t *testing.T) { brokertest.Registered(t, Driver, DefaultSettings()) }

// A bus.url that is no DSN, or a server that does not answer, fails Open with an error naming bus.url.
func TestOpenNamesBusURL(t *testing.T) {
	brokertest.RefusesURLs(t, Driver, DefaultSettings(), "secret",
		"postgres://user:secret@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=1 connect_timeout=2 sslmode=disable")
}

// A topic that cannot name a table, or whose tables' names PostgreSQL would cut, is refused.
func TestDeclareRefusesBadTopics(t *testing.T) {
	b := open(t, testenv.Postgres(t), testSettings())
	for _, topic := range []string{"a b", "x;drop", strings.Repeat("t", 50)} {
		if err := b.Declare(context.Background(), topic, []string{"g"}); err == nil || !strings.Contains(err.Error(), "bus.topic") {
			t.Errorf("Declare(%q) = %v, want an error naming bus.topic", topic, err)
		}
	}
}

// The trap of watermill-sql's queue schema (a polled batch marked acked as a whole) does not bite the
// log schema this driver uses: with 10 rows per poll, a subscriber that acks 3 and closes with the 4th
// unacked leaves the other 7 to the next member, and the 3 are not offered again.
func TestPartBatch(t *testing.T) {
	s := onePartition()
	s.SubscribeBatchSize = 10
	b := open(t, testenv.Postgres(t), s)
	topic, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := b.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for range 10 {
		m := brokertest.Chunk(1)
		sent = append(sent, m.UUID)
		if err := b.Publisher().Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	s1, ch1 := brokertest.Subscribe(t, b, g[0], topic)
	for i := range 4 {
		m := next(t, ch1)
		if m.UUID != sent[i] {
			t.Fatalf("message %d is %s, want %s (commit order)", i, m.UUID, sent[i])
		}
		if i < 3 {
			m.Ack()
		}
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	_, ch2 := brokertest.Subscribe(t, b, g[0], topic)
	for i := 3; i < 10; i++ {
		m := next(t, ch2)
		m.Ack()
		if m.UUID != sent[i] {
			t.Errorf("after the close, message %s, want %s", m.UUID, sent[i])
		}
	}
	select {
	case m := <-ch2:
		t.Errorf("message %s offered again after it was acked", m.UUID)
	case <-time.After(500 * time.Millisecond):
	}
}

var next = brokertest.Next

// onePartition is testSettings with topics of one partition: one transaction of a group at a time,
// in commit order.
func onePartition() Settings {
	s := testSettings()
	s.Partitions = 1
	return s
}

// A subscription hands out one chunk per partition at once: with two partitions it holds two
// unacknowledged chunks. A group's members share the partitions, and each chunk is delivered once.
func TestPartitionsHandOutSeveralAtOnce(t *testing.T) {
	dsn := testenv.Postgres(t)
	s := testSettings()
	s.Partitions = 2
	one, two := open(t, dsn, s), open(t, dsn, s)
	topic, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := one.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Publish(t, one, topic, 4, 1)
	_, ch1 := brokertest.Subscribe(t, one, g[0], topic)
	a, b := next(t, ch1), next(t, ch1) // both unacknowledged: one from each partition
	_, ch2 := brokertest.Subscribe(t, two, g[0], topic)
	got := map[string]int{a.UUID: 1}
	got[b.UUID]++
	a.Ack()
	b.Ack()
	for len(got) < 4 {
		select {
		case m := <-ch1:
			got[m.UUID]++
			m.Ack()
		case m := <-ch2:
			got[m.UUID]++
			m.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 4 chunks after 30 s", len(got))
		}
	}
	select {
	case m := <-ch1:
		got[m.UUID]++
	case m := <-ch2:
		got[m.UUID]++
	case <-time.After(300 * time.Millisecond):
	}
	for id, n := range got {
		if !sent[id] || n != 1 {
			t.Errorf("chunk %s delivered %d times (sent: %v)", id, n, sent[id])
		}
	}
	var parts int
	if err := one.pool.QueryRow(ctx, `SELECT partitions FROM `+one.topicsTable()+` WHERE topic = $1`, topic).Scan(&parts); err != nil || parts != 2 {
		t.Errorf("%s holds %d partitions for the topic (%v), want 2", one.topicsTable(), parts, err)
	}
}

// A topic keeps the partitions it was created with, whatever a later process's settings say; a
// topic whose table was made before partitions existed (by the stock publisher here) has one.
func TestTopicKeepsItsPartitions(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	two := testSettings()
	two.Partitions = 2
	first := open(t, dsn, two)
	topic, g := brokertest.Names(t, "a")
	if err := first.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	later := open(t, dsn, testSettings()) // 4 partitions for a new topic
	if n, err := later.partitions(ctx, topic); err != nil || n != 2 {
		t.Errorf("a later process sees %d partitions (%v), want 2", n, err)
	}

	legacy, _ := brokertest.Names(t, "legacy")
	stock, err := wsql.NewPublisher(wsql.BeginnerFromPgx(later.pool), wsql.PublisherConfig{SchemaAdapter: later.schema,
		AutoInitializeSchema: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := stock.Publish(legacy, sent); err != nil {
		t.Fatal(err)
	}
	if err := later.Declare(ctx, legacy, g); err != nil {
		t.Fatal(err)
	}
	if n, err := later.partitions(ctx, legacy); err != nil || n != 1 {
		t.Errorf("the legacy topic has %d partitions (%v), want 1", n, err)
	}
	_, ch := brokertest.Subscribe(t, later, g[0], legacy)
	if m := next(t, ch); m.UUID != sent.UUID {
		t.Errorf("got %s, want %s", m.UUID, sent.UUID)
	} else {
		m.Ack()
	}
	if err := later.Declare(ctx, legacy+":3", g); err == nil || !strings.Contains(err.Error(), "partitions") {
		t.Errorf("Declare of a topic named like a partition = %v, want a refusal", err)
	}
}

// Chunks published before the groups were declared or subscribed are not lost: a group starts at the
// beginning of the topic.
func TestPublishedBeforeDeclareIsKept(t *testing.T) {
	b := open(t, testenv.Postgres(t), testSettings())
	topic, g := brokertest.Names(t, "late")
	sent := brokertest.Chunk(2)
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	_, ch := brokertest.Subscribe(t, b, g[0], topic)
	if m := next(t, ch); m.UUID != sent.UUID {
		t.Errorf("got %s, want %s", m.UUID, sent.UUID)
	} else {
		m.Ack()
	}
}

// A worker killed while it holds a chunk: PostgreSQL ends its connection (pg_terminate_backend, what
// a kill -9 of the worker comes to for the server), and another member of the group gets the chunk.
func TestKilledWorkersChunkGoesToAnotherMember(t *testing.T) {
	dsn := testenv.Postgres(t)
	worker, other := open(t, dsn, onePartition()), open(t, dsn, onePartition()) // one transaction idle: the worker's
	topic, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := worker.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := worker.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	_, ch1 := brokertest.Subscribe(t, worker, g[0], topic)
	next(t, ch1) // held, never acked
	_, ch2 := brokertest.Subscribe(t, other, g[0], topic)
	// The worker's transaction is the one idle in a transaction, holding the group's row.
	var killed int
	if err := other.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d worker sessions (%v), want 1", killed, err)
	}
	m := next(t, ch2)
	m.Ack()
	if m.UUID != sent.UUID {
		t.Errorf("the other member got %s, want %s", m.UUID, sent.UUID)
	}
}

// Rows are pruned once every group has consumed them, and not before.
func TestPruneDeletesWhatEveryGroupConsumed(t *testing.T) {
	s := testSettings()
	s.Partitions = 2
	s.Retention = 0
	s.PruneInterval = time.Hour // the test prunes itself
	b := open(t, testenv.Postgres(t), s)
	topic, g := brokertest.Names(t, "pg", "blob")
	ctx := context.Background()
	if err := b.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
			t.Fatal(err)
		}
	}
	consume := func(group string) {
		sub, ch := brokertest.Subscribe(t, b, group, topic)
		defer sub.Close()
		for range 5 {
			next(t, ch).Ack()
		}
		// The offsets are committed after the last ack: wait until the group's position has moved
		// in both partitions (3 chunks in one, 2 in the other: offsets count per table).
		waitFor(t, func() bool {
			var acked int64
			_ = b.pool.QueryRow(ctx, `SELECT (SELECT offset_acked FROM `+b.offsets.MessagesOffsetsTable(topic)+` WHERE consumer_group = $1) +
				(SELECT offset_acked FROM `+b.offsets.MessagesOffsetsTable(partitionTopic(topic, 1))+` WHERE consumer_group = $1)`, group).Scan(&acked)
			return acked == 5
		})
	}
	consume(g[0])
	if n, err := b.pruneTopic(ctx, topic); err != nil || n != 0 {
		t.Fatalf("prune with one group behind deleted %d rows (%v), want 0", n, err)
	}
	consume(g[1])
	if n, err := b.pruneTopic(ctx, topic); err != nil || n != 5 {
		t.Fatalf("prune with every group done deleted %d rows (%v), want 5", n, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
	}
}

// The section bus.postgres comes from YAML and SLUICE_BUS_POSTGRES_<KEY>, and its errors name the key.
func TestSettingsFromConfiguration(t *testing.T) {
	s := brokertest.SettingErrors(t, Driver, testenv.DefaultPostgresDSN, []string{"SLUICE_BUS_POSTGRES_POLL_INTERVAL=100ms"}, map[string]string{
		"SLUICE_BUS_POSTGRES_POLL_INTERVAL=0":        "bus.postgres.poll_interval",
		"SLUICE_BUS_POSTGRES_SUBSCRIBE_BATCH_SIZE=0": "bus.postgres.subscribe_batch_size",
		"SLUICE_BUS_POSTGRES_TABLE_PREFIX=a b":       "bus.postgres.table_prefix",
		"SLUICE_BUS_POSTGRES_MAX_CONNS=1":            "bus.postgres.max_conns",
		"SLUICE_BUS_POSTGRES_RETENTION=-1s":          "bus.postgres.retention",
		"SLUICE_BUS_POSTGRES_PARTITIONS=0":           "bus.postgres.partitions",
		"SLUICE_BUS_POSTGRES_PARTITIONS=65":          "bus.postgres.partitions",
	})
	if got := s.(Settings).PollInterval; got != 100*time.Millisecond {
		t.Errorf("poll_interval = %s, want 100ms", got)
	}
}

// Chunks of 1,000 events through PostgreSQL: publish, then consume (figures, not asserted).
func BenchmarkBroker(b *testing.B) {
	dsn := testenv.Postgres(b)
	brokertest.Bench(b, func(tb testing.TB) brokers.Broker { return open(tb, dsn, DefaultSettings()) })
}

// The sessions carry the settings that cut off a vanished or hung worker: TCP keepalives of about
// 11 s, and idle_in_transaction_session_timeout of ack_deadline × subscribe_batch_size × partitions
// + 10 s.
func TestSessionsCutOffAVanishedWorker(t *testing.T) {
	b := open(t, testenv.Postgres(t), DefaultSettings())
	var idle, count, interval, timeout string
	if err := b.pool.QueryRow(context.Background(), `SELECT current_setting('tcp_keepalives_idle'),
		current_setting('tcp_keepalives_count'), current_setting('tcp_keepalives_interval'),
		current_setting('idle_in_transaction_session_timeout')`).Scan(&idle, &count, &interval, &timeout); err != nil {
		t.Fatal(err)
	}
	if idle != "5" || count != "3" || interval != "2" || timeout != "130s" {
		t.Errorf("keepalives idle %s, count %s, interval %s; idle_in_transaction_session_timeout %s; want 5, 3, 2 and 130s",
			idle, count, interval, timeout)
	}
}

// Close while publishes run: they finish or are refused with ErrPublisherClosed, and the race
// detector finds nothing (the stock publisher's Close races with its Publish).
func TestCloseWhilePublishing(t *testing.T) {
	b, err := Open(context.Background(), testenv.Postgres(t), testSettings(), nil)
	if err != nil {
		t.Fatal(err)
	}
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for b.Publisher().Publish(topic, brokertest.Chunk(1)) == nil {
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); !errors.Is(err, wsql.ErrPublisherClosed) {
		t.Errorf("Publish after Close = %v, want ErrPublisherClosed", err)
	}
}

// A worker writes fewer chunks at once than a subscription holds (one per partition): a chunk that
// waits for a write keeps its own ack_deadline for the write. With 2 partitions and ack_deadline
// 1 s, two chunks acknowledged 0.7 s apart, the second 1.4 s after it was handed out, are each
// delivered once.
func TestChunksWaitingForAWriteKeepTheirDeadline(t *testing.T) {
	s := testSettings()
	s.Partitions, s.AckDeadline = 2, time.Second
	b := open(t, testenv.Postgres(t), s)
	topic, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := b.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
			t.Fatal(err)
		}
	}
	_, ch := brokertest.Subscribe(t, b, g[0], topic)
	first, second := next(t, ch), next(t, ch)
	time.Sleep(700 * time.Millisecond) // the first one's write
	first.Ack()
	time.Sleep(700 * time.Millisecond) // the second one's, after waiting for the first
	second.Ack()
	select {
	case m := <-ch:
		t.Fatalf("chunk %s offered again (first %s, second %s)", m.UUID, first.UUID, second.UUID)
	case <-time.After(2500 * time.Millisecond):
	}
}

// A chunk whose deadline passed while the consumer did not read is not handed out: the stock
// subscriber offers it again, and that copy is. Every message handed out has a live context, and each
// chunk is acknowledged once.
func TestNoStaleChunkIsHandedOut(t *testing.T) {
	s := testSettings()
	s.Partitions, s.AckDeadline = 2, 300*time.Millisecond
	b := open(t, testenv.Postgres(t), s)
	topic, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := b.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Publish(t, b, topic, 2, 1)
	_, ch := brokertest.Subscribe(t, b, g[0], topic)
	time.Sleep(1500 * time.Millisecond) // past 2 × 300 ms: what the forwarders held is stale
	acked := map[string]int{}
	for len(acked) < 2 {
		m := next(t, ch)
		if err := m.Context().Err(); err != nil {
			t.Fatalf("chunk %s handed out with its context done: %v", m.UUID, err)
		}
		acked[m.UUID]++
		m.Ack()
	}
	for id, n := range acked {
		if !sent[id] || n != 1 {
			t.Errorf("chunk %s acknowledged %d times (sent: %v)", id, n, sent[id])
		}
	}
}

// A topic may be called topics: the table of partition counts is no topic's.
func TestATopicCalledTopics(t *testing.T) {
	b := open(t, testenv.Postgres(t), testSettings())
	_, g := brokertest.Names(t, "a")
	ctx := context.Background()
	if err := b.Declare(ctx, "topics", g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := b.Publisher().Publish("topics", sent); err != nil {
		t.Fatal(err)
	}
	_, ch := brokertest.Subscribe(t, b, g[0], "topics")
	if m := next(t, ch); m.UUID != sent.UUID {
		t.Errorf("got %s, want %s", m.UUID, sent.UUID)
	} else {
		m.Ack()
	}
}
