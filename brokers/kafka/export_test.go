package kafka

import "github.com/twmb/franz-go/pkg/kgo"

// ProducerClient is the client that publishes, for tests that read its options.
func ProducerClient(b *Broker) *kgo.Client { return b.client }
