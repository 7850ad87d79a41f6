package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// subscriber consumes a consumer group's queue. Each subscription has a connection of its own, hands
// out up to bus.amqp.prefetch chunks at once (each acked or nacked on its own), and dials again
// when its connection drops, with the topology declared again.
type subscriber struct {
	b         *Broker
	group     string
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Subscribe declares the topic and the group's queue and starts consuming it. The first connection
// is made before it returns, so that a broker that cannot be reached is an error here.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, errors.New("brokers/amqp: subscriber closed")
	default:
	}
	c, err := s.connect(topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go s.run(ctx, topic, c, out)
	return out, nil
}

// consumer is one connection's consumption of a queue.
type consumer struct {
	conn       *amqp091.Connection
	deliveries <-chan amqp091.Delivery
	closed     chan *amqp091.Error
}

func (s *subscriber) connect(topic string) (*consumer, error) {
	conn, err := amqp091.DialConfig(s.b.url, s.b.config())
	if err != nil {
		return nil, fmt.Errorf("bus.url: RabbitMQ at %s does not answer: %w", redact(s.b.url), err)
	}
	c, err := s.consume(conn, topic)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

func (s *subscriber) consume(conn *amqp091.Connection, topic string) (*consumer, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := s.b.declare(ch, topic, []string{s.group}); err != nil {
		return nil, err
	}
	if err := ch.Qos(s.b.settings.Prefetch, 0, false); err != nil {
		return nil, err
	}
	deliveries, err := ch.Consume(QueueName(topic, s.group), "", false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("brokers/amqp: consume queue %q: %w", QueueName(topic, s.group), err)
	}
	return &consumer{conn: conn, deliveries: deliveries, closed: conn.NotifyClose(make(chan *amqp091.Error, 1))}, nil
}

// run hands out what c delivers until ctx ends or the subscriber closes, connecting again (after 0.1
// s, doubling up to 5 s) whenever the connection drops.
func (s *subscriber) run(ctx context.Context, topic string, c *consumer, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	wait := 100 * time.Millisecond
	for {
		err := s.handOut(ctx, c, out)
		_ = c.conn.Close() // RabbitMQ requeues what this connection did not acknowledge
		if err == nil {
			return
		}
		fields := watermill.LogFields{"topic": topic, "group": s.group}
		s.b.log.Error("brokers/amqp: consumer connection lost; connecting again", err, fields)
		for c = nil; c == nil; {
			select {
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			case <-time.After(wait):
			}
			if c, err = s.connect(topic); err != nil {
				s.b.log.Error("brokers/amqp: connect the consumer", err, fields)
				wait = min(2*wait, 5*time.Second)
			}
		}
		wait = 100 * time.Millisecond
	}
}

// handOut passes deliveries on until ctx ends or the subscriber closes (nil) or the connection drops
// (its error). Each chunk handed out is settled by a goroutine of its own: at most prefetch at once.
func (s *subscriber) handOut(ctx context.Context, c *consumer, out chan<- *message.Message) error {
	var settling sync.WaitGroup
	defer settling.Wait()
	lost := make(chan struct{}) // closed when handOut returns: the deliveries' acks can no longer land
	defer close(lost)
	for {
		select {
		case d, ok := <-c.deliveries:
			if !ok { // the channel closed, or RabbitMQ cancelled the consumer (its queue deleted)
				return errors.New("the deliveries ended (channel closed or consumer cancelled)")
			}
			msg, err := s.b.pub.marshaler.Unmarshal(d)
			if err != nil { // not a message of sluice's: offered again later, never dropped
				s.b.log.Error("brokers/amqp: unreadable delivery", err, nil)
				settling.Go(func() { s.nack(d, lost) })
				continue
			}
			mctx, cancel := context.WithCancel(ctx)
			msg.SetContext(mctx)
			select {
			case out <- msg:
			case <-ctx.Done():
				cancel()
				return nil
			case <-s.closing:
				cancel()
				return nil
			case err := <-c.closed:
				cancel()
				return fmt.Errorf("connection closed: %v", err)
			}
			settling.Go(func() {
				defer cancel()
				s.settle(d, msg, lost)
			})
		case err := <-c.closed:
			return fmt.Errorf("connection closed: %v", err)
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		}
	}
}

// settle passes msg's ack on to RabbitMQ, or its nack after nack_delay; once the consumption ended
// (lost) it gives up, unless msg is acked by then: the connection's close requeues the delivery.
func (s *subscriber) settle(d amqp091.Delivery, msg *message.Message, lost <-chan struct{}) {
	select {
	case <-msg.Acked():
		_ = d.Ack(false)
	case <-msg.Nacked():
		s.nack(d, lost)
	case <-lost:
		select {
		case <-msg.Acked(): // acked as the consumption ended: the connection is still open
			_ = d.Ack(false)
		default:
		}
	}
}

func (s *subscriber) nack(d amqp091.Delivery, lost <-chan struct{}) {
	t := time.NewTimer(s.b.settings.NackDelay)
	defer t.Stop()
	select {
	case <-t.C:
		_ = d.Nack(false, true)
	case <-lost:
	}
}

// Close stops every subscription and closes its connection: RabbitMQ requeues the chunks handed out
// and not acknowledged, for the other members.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}
