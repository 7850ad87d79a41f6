package kafka_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/internal/testenv"
)

// stockSaramaConfig is a team's own watermill-kafka set-up done right: the protocol version stated
// (kfake refuses the old Produce and Fetch versions sarama picks otherwise), acks from every in-sync
// replica and an idempotent producer (retries never write twice), consumer groups that start at the
// oldest offset (sarama's default, the newest, skips what was published before the group first
// joined), offsets auto-committed every second (a kill -9 redelivers at most that; committing after
// every ack is one round trip per message), and static membership (a restarted worker gets its
// partitions back without a rebalance).
func stockSaramaConfig(instanceID string) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.ClientID = "sluice-stock"
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Return.Successes = true
	c.Producer.MaxMessageBytes = 4 << 20
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = time.Second
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = time.Second
	c.Consumer.Group.InstanceId = instanceID
	return c
}

var stockMembers atomic.Int64

// stockBroker is the stock watermill-kafka Publisher and Subscriber as a Broker (brokers.FromWatermill):
// what a team that already runs watermill-kafka hands sluice.
func stockBroker(t testing.TB, addr string) brokers.Broker {
	t.Helper()
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{Brokers: []string{addr},
		Marshaler: wkafka.DefaultMarshaler{}, OverwriteSaramaConfig: stockSaramaConfig("")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := brokers.FromWatermill(pub, func(group string) (message.Subscriber, error) {
		// one static member id per subscriber: each stands for a worker process of its own
		id := fmt.Sprintf("worker-%d", stockMembers.Add(1))
		return wkafka.NewSubscriber(wkafka.SubscriberConfig{Brokers: []string{addr}, ConsumerGroup: group,
			Unmarshaler: wkafka.DefaultMarshaler{}, OverwriteSaramaConfig: stockSaramaConfig(id)}, nil)
	})
	t.Cleanup(func() { _ = pub.Close() }) // FromWatermill closes nothing of the caller's
	return b
}

// A team's own stock watermill-kafka set-up works as sluice's broker through brokers.FromWatermill.
// FromWatermill declares nothing, so the broker creates topics on first use; a static member that
// closes does not leave its group, so its partitions move after the session timeout (10 s).
func TestStockWatermillKafkaThroughFromWatermill(t *testing.T) {
	k := testenv.Kafka(t, testenv.KafkaOptions{Partitions: 6, AutoCreateTopics: true})
	brokertest.Run(t, func(t *testing.T) brokers.Broker { return stockBroker(t, k.Addr()) },
		brokertest.Options{Redelivery: 25 * time.Second, OneUnackedPerSubscription: true,
			MaxChunkBytes: 768 << 10}) // a topic created by the stock set-up keeps Kafka's 1 MB limit: a web node's chunks (512 KiB) fit
}
