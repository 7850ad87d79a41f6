package postgres

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// Settings are the section bus.postgres of sluice's configuration (environment variables
// SLUICE_BUS_POSTGRES_<KEY>). This package owns their keys, defaults and validation.
type Settings struct {
	// TablePrefix starts the names of the bus's tables: <prefix><topic> (and <prefix><topic>:<n>,
	// the topic's other partitions) hold the messages, <prefix>offsets_<topic> each consumer group's
	// position in each, and "<prefix>topic partitions" each topic's number of partitions.
	TablePrefix string `yaml:"table_prefix"`
	// Partitions is the number of partitions of a topic that this driver creates: a message table
	// each, read by one member of a group at a time, so that up to this many chunks of a group are
	// written at once by the group's workers. A topic keeps the number it was created with
	// ("<prefix>topic partitions" holds it); a topic created before partitions existed has one.
	Partitions int `yaml:"partitions"`
	// PollInterval is how long a subscription waits before it looks again when it found nothing:
	// the latency of an idle bus.
	PollInterval time.Duration `yaml:"poll_interval"`
	// AckDeadline is how long a worker may take to write a chunk; after it the chunk is offered
	// again (and the worker's late ack is lost, which costs a second, idempotent write). A
	// subscription holds up to one chunk per partition, waiting for the route's writes: it gives
	// the chunks of a topic of n partitions AckDeadline × n.
	AckDeadline time.Duration `yaml:"ack_deadline"`
	// NackDelay is how long a nacked chunk waits before it is offered again.
	NackDelay time.Duration `yaml:"nack_delay"`
	// SubscribeBatchSize is how many rows one poll reads. Rows acked before a kill -9 of the worker
	// are committed only when the whole polled batch is done, so a kill -9 offers up to this many
	// chunks again.
	SubscribeBatchSize int `yaml:"subscribe_batch_size"`
	// Retention is how long a row that every consumer group has consumed is kept before it is
	// deleted (for a look at what went through); PruneInterval is how often a worker deletes them.
	Retention     time.Duration `yaml:"retention"`
	PruneInterval time.Duration `yaml:"prune_interval"`
	// MaxConns bounds the connection pool of a process: a subscription holds one per partition
	// while it hands out a chunk of it, a publish one while it inserts.
	MaxConns int `yaml:"max_conns"`
}

// DefaultSettings are the production defaults: 4 partitions per topic, a poll every 250 ms, 30 s to
// write a chunk, a nacked chunk offered again after 1 s, one row per poll, consumed rows kept for an
// hour and pruned every minute, 16 connections.
func DefaultSettings() Settings {
	return Settings{
		TablePrefix:        "sluice_bus_",
		Partitions:         4,
		PollInterval:       250 * time.Millisecond,
		AckDeadline:        30 * time.Second,
		NackDelay:          time.Second,
		SubscribeBatchSize: 1,
		Retention:          time.Hour,
		PruneInterval:      time.Minute,
		MaxConns:           16,
	}
}

// Validate returns every problem of the settings, each a *subscribers.SettingError naming its key
// within bus.postgres.
func (s Settings) Validate() error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.TablePrefix == "" || disallowed.MatchString(s.TablePrefix) {
		bad("table_prefix", `"`+s.TablePrefix+`"`, "must be letters, digits, _, -, . or $ (it starts the bus's table names)")
	}
	if s.Partitions < 1 || s.Partitions > maxPartitions {
		bad("partitions", s.Partitions, fmt.Sprintf("must be 1 to %d", maxPartitions))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"poll_interval", s.PollInterval}, {"ack_deadline", s.AckDeadline}, {"nack_delay", s.NackDelay}, {"prune_interval", s.PruneInterval}} {
		if d.v <= 0 {
			bad(d.key, d.v, "must be positive")
		}
	}
	if s.Retention < 0 {
		bad("retention", s.Retention, "must not be negative (0 deletes consumed rows at the next prune)")
	}
	if s.SubscribeBatchSize <= 0 {
		bad("subscribe_batch_size", s.SubscribeBatchSize, "must be positive")
	}
	if s.MaxConns < 2 {
		bad("max_conns", s.MaxConns, "must be at least 2 (a subscription holds one while a publish needs another)")
	}
	return errors.Join(errs...)
}
