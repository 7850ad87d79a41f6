// Package postgres owns the PostgreSQL broker driver (bus.driver: postgres, bus.url: a PostgreSQL
// DSN, settings bus.postgres): PostgreSQL as the bus between web nodes and workers, through the stock
// Watermill SQL pub/sub (github.com/ThreeDotsLabs/watermill-sql/v4) on a pgx v5 pool. It registers
// itself; import it for its side effect (brokers/all does).
//
// Why watermill-sql v4 and not v3: v4 talks pgx v5 natively (sql.BeginnerFromPgx on a pgxpool), the
// driver sluice already links for its PostgreSQL sink, where v3 goes through database/sql and
// pgx's stdlib adapter; nothing that sluice uses forces v3 (same log schema, same offsets table).
//
// Topology: a topic has partitions (bus.postgres.partitions, 4, fixed when the topic is first used and
// kept in the table "<table_prefix>topic partitions", a name no topic can have). Partition p is watermill-sql's topic <topic> for p = 0 (so a
// topic made before partitions existed is its partition 0, of 1) and <topic>:p for the others, each a
// table <table_prefix><that> (one row per chunk: uuid, payload as bytea, metadata as JSON, the
// inserting transaction's id and an offset) and a table <table_prefix>offsets_<that> with one row per
// consumer group: the position up to which the group has acknowledged. Every group reads every row;
// Declare creates the tables and the row of each group, so a group declared before anything is
// published starts at the beginning and pruning keeps what it has not read yet. Each Publish goes to
// one partition, the partitions in turn.
//
// What it guarantees:
//   - Durability: Publish returns once the INSERT of its messages is committed (one multi-row INSERT,
//     autocommit), so a chunk it accepted survives a kill -9 of PostgreSQL as any committed row does.
//     (The stock publisher, with a Close guarded against running publishes: the stock Close races.)
//   - At-least-once, never loss: a group's position moves only past acknowledged rows, in the same
//     transaction that read them (the stock log schema with the default offsets adapter, which acks
//     up to the last acknowledged row: unlike watermill-sql's queue schema, which marks a whole
//     polled batch acked, a batch that was only partly handled loses nothing; TestPartBatch proves
//     it). A kill -9 of a worker rolls its transaction back: the chunks of its current poll (one by
//     default, subscribe_batch_size) are offered again. A nack offers the chunk again after
//     nack_delay; a chunk not acknowledged within ack_deadline is offered again too (and the context of
//     the message handed out is cancelled).
//   - Members of a group take turns per partition: a poll locks the group's row of the partition
//     (SELECT … FOR UPDATE) until the rows it read are handled, so one member hands out a partition's
//     chunks at a time, one chunk at a time, in commit order. A subscription reads every partition,
//     so it holds up to one chunk per partition unacknowledged, and a group's workers write up to
//     as many chunks at once as the topic has partitions; there is no order across partitions (each
//     route is a group of its own, so routes run in parallel too). When a worker is killed its connection closes, PostgreSQL aborts its
//     transaction at once and another member takes over at its next poll (poll_interval); a worker
//     whose machine vanished is found by the server's TCP keepalives, which this driver sets to
//     about 11 s, and one that hangs with its connection open by idle_in_transaction_session_timeout
//     (ack_deadline times subscribe_batch_size times partitions, plus 10 s: 130 s by default). A
//     subscription of a topic of n partitions holds up to n chunks, which wait for the route's
//     writes, so a chunk is offered again when not acknowledged within ack_deadline × n.
//   - Visibility: a row is read only once every transaction older than it has ended
//     (pg_snapshot_xmin), so a long transaction in the same database delays delivery (never loses).
//     Give the bus a database of its own under load.
//   - Growth: every prune_interval one process (an advisory lock picks it) deletes the rows that
//     every group of the topic has consumed and that are older than retention. A group that is no
//     longer used keeps its rows forever: delete its row from the offsets table when a route goes.
//
// This package must not import the root sluice package, bus/ or the publishers.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/internal/closing"
)

// Driver is the name bus.driver gives this driver, and its section's (bus.postgres).
const Driver = "postgres"

func init() {
	brokers.Register(brokers.DriverOf(Driver,
		"a PostgreSQL DSN (postgres://user:password@host:5432/db?sslmode=disable); it may be the sink's database",
		DefaultSettings, Open))
}

// disallowed matches what watermill-sql refuses in a topic, which becomes part of a table name.
var disallowed = regexp.MustCompile(`[^A-Za-z0-9\-\$\:\.\_]`)

// maxIdentifier is PostgreSQL's longest identifier, in bytes (NAMEDATALEN-1); a longer one is
// truncated, and two topics could then share a table.
const maxIdentifier = 63

// Broker is PostgreSQL opened as sluice's bus.
type Broker struct {
	pool      *pgxpool.Pool
	settings  Settings
	log       watermill.LoggerAdapter
	schema    wsql.DefaultPostgreSQLSchema
	offsets   wsql.DefaultPostgreSQLOffsetsAdapter
	publisher *closing.Publisher

	open closing.Set // the pruner, then the subscribers

	mu     sync.Mutex
	topics map[string]bool // declared: the pruner's
	parts  map[string]int  // each topic's partitions, once known
	next   atomic.Uint64   // Publish calls so far: each goes to the next partition
	stop   chan struct{}
	done   chan struct{}
}

// Open connects to the PostgreSQL at dsn (bus.url) and starts the pruner. It fails when dsn is not a
// DSN or the server does not answer within ctx (or 10 s).
func Open(ctx context.Context, dsn string, s Settings, log watermill.LoggerAdapter) (*Broker, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("bus.postgres: %w", err)
	}
	if log == nil {
		log = watermill.NopLogger{}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bus.url: not a PostgreSQL DSN (bus.driver is postgres): %w", err) // pgconn masks the password
	}
	cfg.MaxConns = int32(s.MaxConns)
	// A worker that vanished without closing its connection must not hold its group's row forever;
	// one that holds a chunk of each partition may take ack_deadline per partition (see Subscribe).
	idle := s.AckDeadline*time.Duration(s.SubscribeBatchSize*s.Partitions) + 10*time.Second
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(idle.Milliseconds(), 10)
	// A worker whose machine vanished is found by the server's TCP keepalives within about 11 s
	// (5 s idle, then 3 probes 2 s apart) while its transaction waits for it.
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_idle"] = "5"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_interval"] = "2"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.ConnConfig.RuntimeParams["application_name"] = "sluice-bus"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus.url: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bus.url: PostgreSQL at %s:%d does not answer: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	b := &Broker{
		pool:     pool,
		settings: s,
		log:      log,
		schema: wsql.DefaultPostgreSQLSchema{
			GenerateMessagesTableName: func(topic string) string { return `"` + s.TablePrefix + topic + `"` },
			GeneratePayloadType:       func(string) string { return "BYTEA" }, // NDJSON: not one JSON value
			SubscribeBatchSize:        s.SubscribeBatchSize,
		},
		offsets: wsql.DefaultPostgreSQLOffsetsAdapter{
			GenerateMessagesOffsetsTableName: func(topic string) string { return `"` + s.TablePrefix + "offsets_" + topic + `"` },
		},
		topics: map[string]bool{},
		parts:  map[string]int{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	stock, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{
		SchemaAdapter:        b.schema,
		AutoInitializeSchema: true,
	}, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	b.publisher = closing.NewPublisher(stock, wsql.ErrPublisherClosed)
	go b.pruneLoop()
	b.open.Add(b.stopPruning) // first: the pruner stops before the subscribers close
	return b, nil
}

// Publisher returns the stock SQL publisher (with a safe Close) over the partitions of each topic, in
// turn: Publish returns once the INSERT of its messages (into one partition) is committed.
func (b *Broker) Publisher() message.Publisher { return &partitionedPublisher{b: b} }

// Subscriber returns a subscriber in the consumer group group.
func (b *Broker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("brokers/postgres: empty consumer group")
	}
	sub := &partitionedSubscriber{b: b, group: group, closing: make(chan struct{})}
	if !b.open.Add(sub.Close) {
		_ = sub.Close()
		return nil, errors.New("brokers/postgres: broker closed")
	}
	return sub, nil
}

// newSubscriber returns a stock subscriber in group whose hand-outs are offered again when not
// acknowledged within ackDeadline.
func (b *Broker) newSubscriber(group string, ackDeadline time.Duration) (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(wsql.BeginnerFromPgx(b.pool), wsql.SubscriberConfig{
		ConsumerGroup:    group,
		AckDeadline:      &ackDeadline,
		PollInterval:     b.settings.PollInterval,
		ResendInterval:   b.settings.NackDelay,
		RetryInterval:    time.Second,
		SchemaAdapter:    b.schema,
		OffsetsAdapter:   b.offsets,
		InitializeSchema: true,
	}, b.log)
}

// Declare creates the topic's tables (those of each of its partitions, and the table of partition
// counts) and the row of each group in each partition (at its beginning), and has the pruner look
// after the topic. It is idempotent.
func (b *Broker) Declare(ctx context.Context, topic string, groups []string) error {
	if err := b.checkTopic(topic, 1); err != nil { // before it is recorded, with its shortest names
		return err
	}
	for _, g := range groups {
		if g == "" {
			return errors.New("brokers/postgres: empty consumer group")
		}
	}
	n, err := b.partitions(ctx, topic)
	if err != nil {
		return err
	}
	if err := b.checkTopic(topic, n); err != nil {
		return err
	}
	init, err := b.newSubscriber("", b.settings.AckDeadline)
	if err != nil {
		return err
	}
	for p := range n {
		pt := partitionTopic(topic, p)
		if err := init.SubscribeInitialize(pt); err != nil {
			return fmt.Errorf("brokers/postgres: create the tables of topic %q: %w", pt, err)
		}
		for _, g := range groups {
			if _, err := b.pool.Exec(ctx, `INSERT INTO `+b.offsets.MessagesOffsetsTable(pt)+
				` (consumer_group, offset_acked, last_processed_transaction_id) VALUES ($1, 0, '0') ON CONFLICT DO NOTHING`, g); err != nil {
				return fmt.Errorf("brokers/postgres: declare group %q of topic %q: %w", g, pt, err)
			}
		}
	}
	b.mu.Lock()
	b.topics[topic] = true
	b.mu.Unlock()
	return nil
}

// checkTopic refuses a topic that cannot name a table, that could be another topic's partition, or
// whose tables' names PostgreSQL would cut with n partitions.
func (b *Broker) checkTopic(topic string, n int) error {
	if topic == "" || disallowed.MatchString(topic) || partitionSuffix.MatchString(topic) {
		return fmt.Errorf("brokers/postgres: topic %q (bus.topic) must be letters, digits, _, -, ., : or $ (it names a table), and not end in : and digits (which name its partitions)", topic)
	}
	if name := b.settings.TablePrefix + "offsets_" + partitionTopic(topic, n-1); len(name) > maxIdentifier {
		return fmt.Errorf("brokers/postgres: topic %q (bus.topic) makes the table name %q, longer than PostgreSQL's %d bytes: shorten bus.topic or bus.postgres.table_prefix",
			topic, name, maxIdentifier)
	}
	return nil
}

// Close stops the pruner, then closes the subscribers, the publisher and the pool.
func (b *Broker) Close() error {
	return b.open.Close(b.publisher.Close, func() error { b.pool.Close(); return nil })
}

// stopPruning ends the pruner and waits for it.
func (b *Broker) stopPruning() error {
	close(b.stop)
	<-b.done
	return nil
}

func (b *Broker) pruneLoop() {
	defer close(b.done)
	t := time.NewTicker(b.settings.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		topics := make([]string, 0, len(b.topics))
		for topic := range b.topics {
			topics = append(topics, topic)
		}
		b.mu.Unlock()
		for _, topic := range topics {
			ctx, cancel := context.WithTimeout(context.Background(), b.settings.PruneInterval)
			n, err := b.pruneTopic(ctx, topic)
			cancel()
			if err != nil {
				b.log.Error("brokers/postgres: prune consumed rows", err, watermill.LogFields{"topic": topic})
			} else if n > 0 {
				b.log.Debug("brokers/postgres: pruned consumed rows", watermill.LogFields{"topic": topic, "rows": n})
			}
		}
	}
}

// pruneTopic prunes every partition of topic (a declared one: its partitions are known).
func (b *Broker) pruneTopic(ctx context.Context, topic string) (int64, error) {
	parts, err := b.partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	var errs []error
	for p := range parts {
		n, err := b.prune(ctx, partitionTopic(topic, p))
		sum += n
		errs = append(errs, err)
	}
	return sum, errors.Join(errs...)
}

// lockKey is the key of the PostgreSQL advisory lock named name.
func lockKey(name string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum32())
}

// prune deletes the rows of topic that every group has consumed and that are older than retention,
// unless another process is pruning the topic. It returns how many it deleted.
func (b *Broker) prune(ctx context.Context, topic string) (int64, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var mine bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockKey("sluice-bus-prune:"+b.schema.MessagesTable(topic))).Scan(&mine); err != nil || !mine {
		return 0, err
	}
	offsets := b.offsets.MessagesOffsetsTable(topic)
	// A row is consumed by a group when it is at or before the group's position, in the order the
	// subscriber reads: (transaction_id, offset). No group at all: nothing is consumed.
	tag, err := tx.Exec(ctx, `DELETE FROM `+b.schema.MessagesTable(topic)+` m
		WHERE m.created_at < LOCALTIMESTAMP - make_interval(secs => $1)
		AND EXISTS (SELECT 1 FROM `+offsets+`)
		AND NOT EXISTS (SELECT 1 FROM `+offsets+` o
			WHERE (m.transaction_id, m."offset") > (o.last_processed_transaction_id, o.offset_acked))`,
		b.settings.Retention.Seconds())
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), tx.Commit(ctx)
}
