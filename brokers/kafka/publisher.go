package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// UUIDHeader is the record header that carries the message's UUID: watermill-kafka's, so that either
// side may be the stock adapter. Every other header is a metadata entry.
const UUIDHeader = "_watermill_message_uuid"

type publisher struct {
	client   *kgo.Client
	settings Settings
	closed   atomic.Bool
}

// Publish produces one record per message (no key: records spread over the partitions) and returns
// once every one is acknowledged by all in-sync replicas, or the first error.
func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("kafka: Publish: the publisher is closed")
	}
	records := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		records[i] = toRecord(topic, m)
	}
	if err := p.client.ProduceSync(context.Background(), records...).FirstErr(); err != nil {
		return fmt.Errorf("kafka: publish %d messages to topic %s: %w", len(msgs), topic, err)
	}
	return nil
}

// Close closes the client; a Publish under way fails.
func (p *publisher) Close() error {
	if !p.closed.Swap(true) {
		p.client.Close()
	}
	return nil
}

func toRecord(topic string, m *message.Message) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(m.Metadata)+1)
	headers = append(headers, kgo.RecordHeader{Key: UUIDHeader, Value: []byte(m.UUID)})
	for k, v := range m.Metadata {
		headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return &kgo.Record{Topic: topic, Value: m.Payload, Headers: headers}
}

func toMessage(r *kgo.Record) *message.Message {
	m := message.NewMessage("", r.Value)
	for _, h := range r.Headers {
		if h.Key == UUIDHeader {
			m.UUID = string(h.Value)
			continue
		}
		m.Metadata.Set(h.Key, string(h.Value))
	}
	if m.UUID == "" { // a record no Watermill publisher wrote: name it by its place
		m.UUID = fmt.Sprintf("%s-%d-%d", r.Topic, r.Partition, r.Offset)
	}
	return m
}
