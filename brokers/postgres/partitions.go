package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// maxPartitions bounds bus.postgres.partitions: each partition of a topic is a subscription per
// group and worker, which polls and holds a connection.
const maxPartitions = 64

// partitionSuffix matches what partitionTopic appends to a topic: a topic may not end so, or its
// tables could be another topic's partition's.
var partitionSuffix = regexp.MustCompile(`:[0-9]+$`)

// partitionTopic is the watermill-sql topic of partition p of topic (its tables are named after it):
// the topic itself for partition 0, which is where a topic created before partitions existed keeps
// its messages, and topic:p for the others.
func partitionTopic(topic string, p int) string {
	if p == 0 {
		return topic
	}
	return topic + ":" + strconv.Itoa(p)
}

// topicsTable is the table that holds each topic's number of partitions. Its name has a space, which
// no topic has: it is no topic's table.
func (b *Broker) topicsTable() string { return `"` + b.settings.TablePrefix + `topic partitions"` }

// partitions returns the number of partitions of topic: the number "<prefix>topic partitions" holds for it, or,
// for a topic it does not know yet, the number it records then: 1 when the topic's table exists
// already (made before partitions existed, or by a stock watermill-sql publisher), else
// bus.postgres.partitions. Every process of the bus thus agrees on it, whatever its settings say.
func (b *Broker) partitions(ctx context.Context, topic string) (int, error) {
	b.mu.Lock()
	n, ok := b.parts[topic]
	b.mu.Unlock()
	if ok {
		return n, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("sluice-bus-topics:"+b.topicsTable())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+b.topicsTable()+
			` (topic text PRIMARY KEY, partitions int NOT NULL CHECK (partitions > 0), created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT partitions FROM `+b.topicsTable()+` WHERE topic = $1`, topic).Scan(&n)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var legacy bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, b.schema.MessagesTable(topic)).Scan(&legacy); err != nil {
			return err
		}
		n = b.settings.Partitions
		if legacy {
			n = 1
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+b.topicsTable()+` (topic, partitions) VALUES ($1, $2)`, topic, n)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("brokers/postgres: the partitions of topic %q: %w", topic, err)
	}
	b.mu.Lock()
	b.parts[topic] = n
	b.mu.Unlock()
	return n, nil
}

// partitionedPublisher publishes each Publish call's messages to one partition of the topic, the
// partitions in turn, through the stock publisher (one INSERT, committed before Publish returns).
type partitionedPublisher struct{ b *Broker }

func (p *partitionedPublisher) Publish(topic string, msgs ...*message.Message) error {
	n, err := p.b.partitions(context.Background(), topic)
	if err != nil {
		return err
	}
	return p.b.publisher.Publish(partitionTopic(topic, int(p.b.next.Add(1)%uint64(n))), msgs...)
}

// Close closes the stock publisher: the broker's Close does too.
func (p *partitionedPublisher) Close() error { return p.b.publisher.Close() }

// partitionedSubscriber subscribes a stock subscriber to every partition of a topic and hands out
// what each hands out: one chunk at a time per partition, up to one per partition at once. Members of
// a group take turns per partition, so a group's members write up to as many chunks at once as the
// topic has partitions.
//
// A chunk's ack deadline runs from the moment the stock subscriber hands it out, and the chunks of
// all partitions wait for the route's writes (a worker writes max_concurrent_writes at once, 2 by
// default), so the stock subscriber of a topic of n partitions is given ack_deadline × n: each chunk
// still has ack_deadline for its own write, after waiting for at most n-1 others.
type partitionedSubscriber struct {
	b       *Broker
	group   string
	closing chan struct{} // closed by Close
	once    sync.Once

	mu     sync.Mutex
	closed bool
	stocks []*wsql.Subscriber
}

func (s *partitionedSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	n, err := s.b.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	stock, err := s.b.newSubscriber(s.group, s.b.settings.AckDeadline*time.Duration(n))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = stock.Close()
		return nil, errors.New("brokers/postgres: subscriber closed")
	}
	s.stocks = append(s.stocks, stock)
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	ins := make([]<-chan *message.Message, n)
	for p := range n {
		if ins[p], err = stock.Subscribe(ctx, partitionTopic(topic, p)); err != nil {
			cancel() // the partitions subscribed so far stop polling
			return nil, err
		}
	}
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(func() {
			for m := range in { // the stock subscription ends (closes in) with ctx or Close
				if m.Context().Err() != nil {
					continue // its deadline passed while it waited here: the stock subscriber offers it again
				}
				select {
				case out <- m:
				case <-m.Context().Done():
				case <-ctx.Done():
					m.Nack()
				case <-s.closing:
					m.Nack()
				}
			}
		})
	}
	go func() {
		wg.Wait()
		cancel()
		close(out)
	}()
	return out, nil
}

// Close ends the subscriptions: what they were handing out is offered again.
func (s *partitionedSubscriber) Close() error {
	s.once.Do(func() { close(s.closing) })
	s.mu.Lock()
	s.closed = true
	stocks := s.stocks
	s.stocks = nil
	s.mu.Unlock()
	var errs []error
	for _, st := range stocks {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
