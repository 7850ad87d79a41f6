package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// ErrUnroutable is what Publish returns when RabbitMQ routed a message to no queue (no consumer group
// declared on the topic): confirmed, and yet held nowhere.
var ErrUnroutable = errors.New("no queue is bound to the exchange (Declare the topic's consumer groups before publishing)")

// publisher publishes on confirm-mode channels of one connection, each held by one Publish at a
// time: every message of a call is published mandatory and persistent, then the call waits for all
// their confirms (bounded by the first message's context and confirm_timeout) and fails when one is
// nacked, returned as unroutable, or not confirmed in time.
type publisher struct {
	b         *Broker
	marshaler marshaler
	slots     chan *confirmChannel // a nil slot opens its channel when taken
	declared  sync.Map             // topic -> struct{}: exchanges this process declared
	closed    atomic.Bool
}

type confirmChannel struct {
	ch      *amqp091.Channel
	returns chan amqp091.Return
}

func newPublisher(b *Broker) *publisher {
	p := &publisher{b: b, slots: make(chan *confirmChannel, b.settings.PublishChannels)}
	for range b.settings.PublishChannels {
		p.slots <- nil
	}
	return p
}

// Publish returns nil once RabbitMQ has confirmed every message, routed to at least one queue.
func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("brokers/amqp: publisher closed")
	}
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(msgs[0].Context(), p.b.settings.ConfirmTimeout)
	defer cancel()
	var c *confirmChannel
	select {
	case c = <-p.slots:
	case <-ctx.Done():
		return fmt.Errorf("brokers/amqp: publish to %q: every channel busy: %w", topic, ctx.Err())
	}
	c, err := p.publish(ctx, c, topic, msgs)
	if err != nil {
		p.declared.Delete(topic) // the exchange may be what went wrong: declare it again next time
		if c != nil {            // the channel's state is unknown (a late confirm, a return): drop it
			go c.discard()
			c = nil
		}
	}
	p.slots <- c
	if err != nil {
		return fmt.Errorf("brokers/amqp: publish %d messages to %q: %w", len(msgs), topic, err)
	}
	return nil
}

func (p *publisher) publish(ctx context.Context, c *confirmChannel, topic string, msgs []*message.Message) (*confirmChannel, error) {
	if p.b.blocked.Load() {
		return c, errors.New("RabbitMQ blocks publishers (a resource alarm: memory or disk)")
	}
	if c == nil || c.ch.IsClosed() {
		var err error
		if c, err = p.open(ctx); err != nil {
			return nil, err
		}
	}
	if _, ok := p.declared.Load(topic); !ok {
		if err := declareExchange(c.ch, topic); err != nil {
			return c, err
		}
		p.declared.Store(topic, struct{}{})
	}
	pending := make([]*amqp091.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		pub, err := p.marshaler.Marshal(m) // persistent, the UUID and metadata in headers
		if err != nil {
			return c, err
		}
		pub.MessageId = m.UUID
		dc, err := c.ch.PublishWithDeferredConfirm(topic, "", true, false, pub)
		if err != nil {
			return c, err
		}
		pending = append(pending, dc)
	}
	// RabbitMQ sends a message's basic.return before its basic.ack, and the client hands both over
	// in that order: once every confirm is in, every return of this call is in c.returns.
	var returned int
	for _, dc := range pending {
	wait:
		for {
			select {
			case <-dc.Done():
				break wait
			case <-c.returns:
				returned++
			case <-ctx.Done():
				return c, fmt.Errorf("not every confirm of %d messages came: %w", len(msgs), ctx.Err())
			}
		}
		if !dc.Acked() {
			return c, errors.New("the broker nacked a message or closed the channel before confirming it")
		}
	}
	for {
		select {
		case <-c.returns:
			returned++
			continue
		default:
		}
		break
	}
	if returned > 0 {
		return c, fmt.Errorf("%d of %d messages: %w", returned, len(msgs), ErrUnroutable)
	}
	return c, nil
}

// open opens a confirm-mode channel on the broker's connection (dialled again if it dropped).
func (p *publisher) open(ctx context.Context) (*confirmChannel, error) {
	conn, err := p.b.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	// Buffered: the connection's reader hands returns over without waiting for this side.
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1024))
	return &confirmChannel{ch: ch, returns: returns}, nil
}

// discard closes a channel whose state is unknown, reading what it still returns until it is closed.
func (c *confirmChannel) discard() {
	go func() {
		for range c.returns { //nolint:revive // drained so that the connection's reader never waits
		}
	}()
	_ = c.ch.Close()
}

func (p *publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	for range cap(p.slots) { // waits for the publishes under way
		if c := <-p.slots; c != nil {
			_ = c.ch.Close()
		}
	}
	return nil
}

func declareExchange(ch *amqp091.Channel, topic string) error {
	if err := ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", topic, err)
	}
	return nil
}
