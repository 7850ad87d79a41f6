package amqp

import (
	"fmt"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// marshaler is the stock wire format (wamqp.DefaultMarshaler: the payload as the body, the UUID and
// the metadata as string headers, persistent) that also reads a delivery whose headers are not all
// strings. A quorum queue adds x-delivery-count (a number) to every redelivery, and the stock
// Unmarshal fails on it: the stock subscriber then nacks the chunk and gets it back at once, in a
// loop that never hands it out (found by the conformance suite on quorum queues). Such a header
// becomes metadata in its decimal text.
type marshaler struct{ wamqp.DefaultMarshaler }

func (m marshaler) Unmarshal(d amqp091.Delivery) (*message.Message, error) {
	headers := make(amqp091.Table, len(d.Headers))
	for k, v := range d.Headers {
		if _, ok := v.(string); !ok {
			v = fmt.Sprint(v)
		}
		headers[k] = v
	}
	d.Headers = headers
	return m.DefaultMarshaler.Unmarshal(d)
}
