package kafka

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicelog/sluice/subscribers"
)

// Settings are the driver's keys, the section bus.kafka (SLUICE_BUS_KAFKA_<KEY> in the environment).
// Topic names are bus.topic as it is (Kafka allows dots); consumer groups are what the worker asks for
// ("<bus.group>.<route>").
type Settings struct {
	// Partitions is the partition count of a topic that Declare creates (an existing topic keeps its
	// own): the most workers that share one route's work. Default 6.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor of a topic that Declare creates; -1 (the default) takes the cluster's
	// default.replication.factor, which is what its operators chose (3 in a production cluster).
	ReplicationFactor int `yaml:"replication_factor"`
	// MaxMessageBytes caps a record batch the producer sends (before compression), and is the
	// max.message.bytes of a topic that Declare creates. Default 4 MiB: a chunk of 1 MiB of events
	// plus its headers is over Kafka's own default of 1,000,012 bytes. A topic created otherwise
	// must allow it, or such chunks fail with MESSAGE_TOO_LARGE.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// Compression of the record batches: none (the default), gzip, snappy, lz4 or zstd. A web node's
	// chunks come compressed already (bus.forward.compression, s2), which Kafka's codecs would only
	// compress again; set one for messages that are not (bus.forward.compression none, or a
	// publisher of your own).
	Compression string `yaml:"compression"`
	// PublishTimeout is how long a Publish retries while no broker acknowledges (30 s); then it
	// fails, and the web node's local bus keeps the chunk.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// SessionTimeout is how long a consumer may go silent before its group declares it dead and
	// moves its partitions (10 s): the hand-over time after a kill -9. The broker bounds it
	// (group.min.session.timeout.ms, 6 s by default).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// HeartbeatInterval is how often a consumer tells its group it lives (1 s), and so how soon it
	// learns of a rebalance.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// RebalanceTimeout bounds how long a rebalance waits for the members to rejoin (30 s).
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// InstanceID, when set, makes each subscription a static member of its group with this id (KIP-345):
	// a worker restarted within session_timeout gets its partitions back with no rebalance, and a
	// closing member does not leave (its partitions move after session_timeout). It must be unique
	// per worker process and stable across its restarts (a StatefulSet pod name); two live workers
	// with one id fence each other. Empty (the default): dynamic members.
	InstanceID string `yaml:"instance_id"`
	// MaxInFlight is how many messages (chunks) a subscription hands out unacknowledged at most (32):
	// what one sink batch can gather, and the memory it holds (32 MiB of 1 MiB chunks, plus one fetch
	// of at most max(max_message_bytes, 16 MiB) buffered).
	MaxInFlight int `yaml:"max_in_flight"`
	// CommitInterval is how often a subscription commits its acknowledged offsets (1 s): what a kill
	// -9 of a worker may deliver again, beyond what it had not acknowledged.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// RedeliveryDelay is how long a nacked message waits before it is offered again (1 s), doubling
	// at each nack of the same message up to 32 times that.
	RedeliveryDelay time.Duration `yaml:"redelivery_delay"`
	// ClientID names the clients in the brokers' logs and quotas ("sluice").
	ClientID string `yaml:"client_id"`
}

// DefaultSettings returns the settings a production cluster needs unless told otherwise.
func DefaultSettings() Settings {
	return Settings{
		Partitions:        6,
		ReplicationFactor: -1,
		MaxMessageBytes:   4 << 20,
		Compression:       "none",
		PublishTimeout:    30 * time.Second,
		SessionTimeout:    10 * time.Second,
		HeartbeatInterval: time.Second,
		RebalanceTimeout:  30 * time.Second,
		MaxInFlight:       32,
		CommitInterval:    time.Second,
		RedeliveryDelay:   time.Second,
		ClientID:          "sluice",
	}
}

var compressions = map[string]kgo.CompressionCodec{
	"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
	"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
}

// Validate returns every invalid setting, each a *subscribers.SettingError naming its key in the
// section (partitions, …).
func (s Settings) Validate() error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.Partitions <= 0 {
		bad("partitions", s.Partitions, "must be positive")
	}
	if s.ReplicationFactor == 0 || s.ReplicationFactor < -1 || s.ReplicationFactor > 32767 {
		bad("replication_factor", s.ReplicationFactor, "must be positive, or -1 for the cluster's default.replication.factor")
	}
	if s.MaxMessageBytes < 64<<10 || s.MaxMessageBytes > 256<<20 {
		bad("max_message_bytes", s.MaxMessageBytes, "must be from 65536 (64 KiB) to 268435456 (256 MiB)")
	}
	if _, ok := compressions[s.Compression]; !ok {
		names := make([]string, 0, len(compressions))
		for n := range compressions {
			names = append(names, n)
		}
		slices.Sort(names)
		bad("compression", s.Compression, "must be one of "+strings.Join(names, ", "))
	}
	if s.PublishTimeout <= 0 {
		bad("publish_timeout", s.PublishTimeout, "must be positive")
	}
	if s.SessionTimeout < 100*time.Millisecond {
		bad("session_timeout", s.SessionTimeout, "must be at least 100ms")
	}
	if s.HeartbeatInterval <= 0 || s.HeartbeatInterval >= s.SessionTimeout {
		bad("heartbeat_interval", s.HeartbeatInterval, "must be positive and less than session_timeout ("+s.SessionTimeout.String()+")")
	}
	if s.RebalanceTimeout < 100*time.Millisecond {
		bad("rebalance_timeout", s.RebalanceTimeout, "must be at least 100ms")
	}
	if s.MaxInFlight <= 0 {
		bad("max_in_flight", s.MaxInFlight, "must be positive")
	}
	if s.CommitInterval <= 0 {
		bad("commit_interval", s.CommitInterval, "must be positive")
	}
	if s.RedeliveryDelay <= 0 {
		bad("redelivery_delay", s.RedeliveryDelay, "must be positive")
	}
	if s.ClientID == "" {
		bad("client_id", `""`, "must not be empty")
	}
	return errors.Join(errs...)
}
