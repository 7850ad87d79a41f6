package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Declare creates topic (bus.kafka.partitions, replication_factor, max_message_bytes as its
// max.message.bytes) unless it exists, and makes every group in groups start where the topic ends
// now on each partition where the group has committed nothing: what is published after Declare
// reaches a group even if none of its members has subscribed yet, and a new group does not replay
// the topic's history. A group that has members already is left to them (Kafka refuses a commit from
// outside a live group). Declaring again changes nothing.
func (b *Broker) Declare(ctx context.Context, topic string, groups []string) error {
	adm := kadm.NewClient(b.client)
	maxBytes := strconv.Itoa(b.settings.MaxMessageBytes)
	resp, err := adm.CreateTopic(ctx, int32(b.settings.Partitions), int16(b.settings.ReplicationFactor),
		map[string]*string{"max.message.bytes": &maxBytes}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %s (bus.kafka.partitions %d, replication_factor %d): %w",
			topic, b.settings.Partitions, b.settings.ReplicationFactor, err)
	}
	if len(groups) == 0 {
		return nil
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: list the end offsets of topic %s: %w", topic, err)
	}
	for _, group := range groups {
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			return fmt.Errorf("kafka: fetch the committed offsets of group %s: %w", group, err)
		}
		start := kadm.Offsets{}
		ends.Each(func(o kadm.ListedOffset) {
			if c, ok := committed.Lookup(topic, o.Partition); !ok || c.Err != nil || c.At < 0 {
				start.Add(kadm.Offset{Topic: topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
			}
		})
		if len(start) == 0 {
			continue
		}
		resp, err := adm.CommitOffsets(ctx, group, start)
		if err == nil {
			err = resp.Error()
		}
		switch {
		case err == nil:
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration),
			errors.Is(err, kerr.RebalanceInProgress):
			// The group is live: its members start where they start (at the topic's start when
			// nothing was committed), and they commit.
		default:
			return fmt.Errorf("kafka: commit the start offsets of group %s on topic %s: %w", group, topic, err)
		}
	}
	return nil
}
