package nats

import "context"

// CreateClosedStream creates topic's stream as Declare does before the consumers exist: refusing
// publishes. For tests that play a member caught between the two steps.
func CreateClosedStream(ctx context.Context, b *Broker, topic string) error {
	_, err := b.js.CreateStream(ctx, b.streamConfig(topic, true))
	return err
}
