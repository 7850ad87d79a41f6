package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/klauspost/compress/zstd"
	natsio "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicelog/sluice/brokers/internal/delivery"
	"github.com/sluicelog/sluice/event"
)

type publisher struct{ b *Broker }

// Publish publishes each message to the subject topic with its UUID as Nats-Msg-Id and its metadata
// as headers, and returns once JetStream acknowledged it (a duplicate within the window counts as
// stored). The message's context bounds the wait (the jetstream default, 5 s, when it has no
// deadline). When the stream is gone it declares it again (Broker.declareAgain: lossSettle
// later) and publishes once more; so it does when the stream is being declared by another member.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	if err := checkSubject(topic); err != nil {
		return err
	}
	stream := StreamName(topic)
	for _, m := range msgs {
		nm := natsio.NewMsg(topic)
		nm.Data = m.Payload
		for k, v := range m.Metadata {
			if strings.HasPrefix(k, "Nats-") {
				return fmt.Errorf("brokers/nats: message %s: metadata key %q is reserved by NATS", m.UUID, k)
			}
			nm.Header.Set(k, v)
		}
		if size(nm, m.UUID)+headroom > p.b.nc.MaxPayload() { // a chunk near 1 MiB: NDJSON compresses several times
			nm.Data = zstdEncoder.EncodeAll(m.Payload, nil)
			nm.Header.Set(encodingHeader, "zstd")
		}
		if size, limit := size(nm, m.UUID)+headroom, p.b.nc.MaxPayload(); size > limit {
			return fmt.Errorf("brokers/nats: message %s: %d bytes exceed the NATS server's max_payload (%d bytes): lower bus.forward.chunk.max_bytes or raise max_payload in the server's configuration", m.UUID, size, limit)
		}
		_, err := p.b.js.PublishMsg(m.Context(), nm, jetstream.WithMsgID(m.UUID), jetstream.WithExpectStream(stream))
		if lost(err) || beingDeclared(err) {
			if derr := p.b.declareAgain(m.Context(), topic, err); derr != nil {
				err = fmt.Errorf("%w (declaring the stream again: %v)", err, derr)
			} else {
				_, err = p.b.js.PublishMsg(m.Context(), nm, jetstream.WithMsgID(m.UUID), jetstream.WithExpectStream(stream))
			}
		}
		if err != nil {
			return fmt.Errorf("brokers/nats: publishing message %s to %s: %w", m.UUID, topic, err)
		}
	}
	return nil
}

// headroom is what the client adds to a message besides its id (Nats-Expected-Stream, framing).
const headroom = 1024

// encodingHeader marks a payload that was compressed to fit the server's max_payload.
const encodingHeader = "Sluice-Payload-Encoding"

var (
	zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(event.MaxChunkBytes))
)

// size is the size of nm on the wire, with the Nats-Msg-Id header it will carry.
func size(nm *natsio.Msg, id string) int64 {
	n := len(nm.Data) + len("NATS/1.0\r\n\r\n") + len(natsio.MsgIdHdr) + len(id) + 4
	for k, vs := range nm.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}

func (publisher) Close() error { return nil }

// Subscriber is a member of a consumer group: each Subscribe reads a topic's stream through the
// group's durable consumer.
type Subscriber struct {
	b     *Broker
	group string
	subs  delivery.Subscriptions
}

var _ message.Subscriber = (*Subscriber)(nil)

// Subscribe creates the stream and the group's consumer if they are missing and hands out the
// messages until ctx ends or Close.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.subs.Closed() {
		return nil, delivery.ErrClosed
	}
	if err := s.b.Declare(ctx, topic, []string{s.group}); err != nil {
		return nil, err
	}
	c, err := s.b.consumer(ctx, topic, s.group)
	if err != nil {
		return nil, err
	}
	src := &source{b: s.b, topic: topic, group: s.group, c: c}
	return delivery.Subscribe(&s.subs, ctx, src, delivery.Options{MaxInFlight: s.b.s.MaxInFlight,
		Heartbeat: s.b.s.AckWait / 3, Logger: s.b.log, Fields: watermill.LogFields{"stream": StreamName(topic), "consumer": ConsumerName(s.group)}})
}

// Close ends the subscriptions, naking the messages they hold so that other members get them at
// once. The durable consumer stays.
func (s *Subscriber) Close() error { return s.subs.Close() }

// source is one subscription's side at JetStream: messages are keyed by themselves.
type source struct {
	b            *Broker
	topic, group string
	c            jetstream.Consumer
}

// fetchWait bounds one pull request that waits for a message, so that a subscription notices its end.
const fetchWait = time.Second

// Fetch takes what the consumer has now, up to n; when it has nothing, it waits up to fetchWait for
// one message (handed out at once, not when n came). The wait is the server's (the pull request
// expires there first): a request that the client gave up on while the server still had it open
// would take messages that nobody hands out, delivered again only after ack_wait.
// When the consumer is gone, it declares the topic again (see Broker.declareAgain). The server says
// so only to a pull request pending at the consumer's deletion (409 Consumer Deleted); one sent to a
// consumer that does not exist gets no answer at all (the server's $JS.API.> handler drops it), so
// the wait asks for idle heartbeats, and a missing one is checked with the consumer's info.
func (r *source) Fetch(ctx context.Context, n int) ([]delivery.Item[jetstream.Msg], error) {
	items, err := r.fetch(r.c.FetchNoWait(n))
	if len(items) == 0 && err == nil && ctx.Err() == nil {
		items, err = r.fetch(r.c.Fetch(1, jetstream.FetchMaxWait(fetchWait), jetstream.FetchHeartbeat(fetchWait/2)))
	}
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		if _, err = r.c.Info(ctx); err == nil { // a heartbeat late, not lost
			return items, nil
		}
	}
	if lost(err) {
		if err := r.b.declareAgain(ctx, r.topic, err); err != nil {
			return items, err
		}
		c, cerr := r.b.consumer(ctx, r.topic, r.group)
		if cerr != nil {
			return items, cerr
		}
		r.c = c
		return items, nil
	}
	return items, err
}

func (r *source) fetch(batch jetstream.MessageBatch, err error) ([]delivery.Item[jetstream.Msg], error) {
	if err != nil {
		return nil, err
	}
	var items []delivery.Item[jetstream.Msg]
	for jm := range batch.Messages() {
		h := jm.Headers()
		data := jm.Data()
		corrupt := false
		if h.Get(encodingHeader) == "zstd" {
			if d, derr := zstdDecoder.DecodeAll(data, nil); derr == nil {
				data = d
			} else {
				corrupt = true // handed out as it is: the worker finds it corrupt too, and dead-letters it
			}
		}
		m := message.NewMessage(h.Get(natsio.MsgIdHdr), data)
		for k, vs := range h {
			if !strings.HasPrefix(k, "Nats-") && k != encodingHeader && len(vs) > 0 {
				m.Metadata.Set(k, vs[0])
			}
		}
		if corrupt {
			m.Metadata.Set(event.MetadataFormat, event.ChunkFormatFor(event.EncodingZstd))
		}
		items = append(items, delivery.Item[jetstream.Msg]{Key: jm, Msg: m})
	}
	return items, batch.Error()
}

func (*source) Ack(ctx context.Context, m jetstream.Msg) error { return ignoreAcked(m.DoubleAck(ctx)) }

func (r *source) Nack(_ context.Context, m jetstream.Msg) error {
	return ignoreAcked(m.NakWithDelay(r.b.s.NackDelay))
}

func (*source) Touch(_ context.Context, ms []jetstream.Msg) error {
	var errs []error
	for _, m := range ms {
		errs = append(errs, ignoreAcked(m.InProgress()))
	}
	return errors.Join(errs...)
}

func (*source) Release(_ context.Context, ms []jetstream.Msg) error {
	var errs []error
	for _, m := range ms {
		errs = append(errs, ignoreAcked(m.Nak()))
	}
	return errors.Join(errs...)
}

// ignoreAcked drops the error of settling a message that was settled meanwhile.
func ignoreAcked(err error) error {
	if errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return nil
	}
	return err
}
