// Package nats owns the NATS JetStream broker driver (bus.driver: nats, bus.url nats://host:4222, its
// settings the section bus.nats): a stream per topic (named after the topic, its one subject the
// topic itself), a durable pull consumer per group, created explicitly and never deleted by sluice,
// and the publishing and acknowledging of chunk messages on them, written on nats.go's jetstream API.
//
// Guarantees and costs:
//   - Streams use file storage, interest retention (a message is removed once every group's consumer
//     has acknowledged it: the stream holds what the slowest group has not acknowledged) and discard
//     new (with bus.nats.max_bytes set, a full stream refuses publishes, and the web nodes keep their
//     chunks in their bounded local bus and count drops: nothing is removed unread). Interest
//     retention keeps only what some consumer will read, so Declare creates the consumers on both
//     sides before anything is published.
//   - Publish returns nil once JetStream acknowledged every message (a publish ack: the message is in
//     the stream's file store, on bus.nats.replicas servers). Each carries Nats-Msg-Id = the message's
//     UUID, so a retried publish within duplicate_window (2 min) is stored once. The client buffers
//     nothing while disconnected: a publish to a NATS that is down fails at once.
//   - A kill -9 of nats-server loses nothing acknowledged (the file store is written before the ack;
//     it is fsynced every sync_interval, 2 min by default: a power loss of the machine can lose what
//     was not synced unless the server runs with sync_interval: always, or replicas >= 3). Acks not
//     yet stored by the server are lost with it: those messages are delivered again.
//   - Delivery is at least once (MaxDeliver unlimited), in stream order per member, with no order
//     across members. Each subscription hands out up to max_in_flight messages unacknowledged at once
//     (max_ack_pending bounds them over all the group's members), acknowledges one with a confirmed
//     ack (DoubleAck) when its message is acked, and tells JetStream every ack_wait/3 that the
//     messages it holds are still being worked on (+WPI), so a live member that takes long keeps its
//     messages.
//   - A member killed with kill -9: JetStream redelivers its messages to the other members once
//     ack_wait (10 s) has passed since their delivery or last heartbeat. A member that closes naks
//     what it holds: redelivered at once. A nacked message is redelivered after nack_delay (2 s).
//   - A chunk that would not fit the server's max_payload (1 MiB by default) is sent compressed (zstd)
//     and decompressed on delivery.
//   - A stream or consumer that is gone (a server whose store was wiped, an operator's delete) is
//     declared again, with every group declared so far, by each publish or fetch that meets its
//     absence, 2 s later: nats-server acts as if a stream it is deleting were gone before it removes
//     the stream's files, and a stream created again meanwhile under the same name loses its files
//     (its messages acknowledged and never delivered). The publish waits, then publishes again.
//   - A stream is created refusing publishes until its consumers exist (interest retention
//     acknowledges and drops a message that no consumer is there to read); a publish that meets it
//     declares it too and publishes again.
//   - A clean Close never deletes a durable consumer (the stock watermill-nats pkg/nats does, for a
//     consumer it created, and the next start replays the whole stream: 600 duplicates of 1,000 in the
//     probe). That, and one unacknowledged message per subscription, is why this driver does not use
//     watermill-nats.
//
// Names: the stream of topic "sluice.events" is "sluice_2Eevents", the durable consumer of group
// "sluice.pg" is "sluice_2Epg": every character that JetStream refuses in a name (and "_") is written
// as _XX in hex, so two topics or groups never share one.
//
// This package imports nothing of sluice but brokers (and its internal delivery and closing
// packages) and subscribers (for SettingError).
package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsio "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/internal/closing"
	"github.com/sluicelog/sluice/subscribers"
)

// Name is the driver's name: bus.driver: nats, settings under bus.nats.
const Name = "nats"

func init() {
	brokers.Register(brokers.DriverOf(Name,
		"nats://[user:password@]host:4222 (tls:// for TLS; several servers separated by commas)",
		DefaultSettings, Open))
}

// Settings are the section bus.nats.
type Settings struct {
	// Replicas is the number of servers that store each stream (1 for a single server; 3 in a
	// cluster, so that a server lost loses nothing).
	Replicas int `yaml:"replicas"`
	// MaxBytes bounds each stream's size in bytes; 0 (the default) leaves it to the server's limits.
	// A full stream refuses publishes: nothing is removed unread.
	MaxBytes int64 `yaml:"max_bytes"`
	// DuplicateWindow is how long JetStream remembers a message's id to drop a republished copy.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// AckWait is how long a message delivered to a member and neither acknowledged nor touched waits
	// before it is delivered again (to any member): the handover time after a kill -9.
	AckWait time.Duration `yaml:"ack_wait"`
	// NackDelay is how long a nacked message waits before it is delivered again.
	NackDelay time.Duration `yaml:"nack_delay"`
	// MaxInFlight bounds the messages each subscription holds unacknowledged.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxAckPending bounds the messages unacknowledged over all the members of a group. It must be
	// at least max_in_flight.
	MaxAckPending int `yaml:"max_ack_pending"`
}

// DefaultSettings: one replica, no size limit of sluice's, a 2 min duplicate window, a dead member's
// messages redelivered after 10 s, nacked ones after 2 s, 32 in flight per subscription and 1,024 per
// group.
func DefaultSettings() Settings {
	return Settings{Replicas: 1, DuplicateWindow: 2 * time.Minute, AckWait: 10 * time.Second, NackDelay: 2 * time.Second, MaxInFlight: 32, MaxAckPending: 1024}
}

// Validate returns every invalid setting, each a *subscribers.SettingError naming its key.
func (s Settings) Validate() error {
	var errs []error
	bad := func(key string, v any, msg string) {
		errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: msg})
	}
	if s.Replicas < 1 || s.Replicas > 5 {
		bad("replicas", s.Replicas, "must be from 1 to 5")
	}
	if s.MaxBytes < 0 {
		bad("max_bytes", s.MaxBytes, "must not be negative (0 means no limit of sluice's)")
	}
	for key, d := range map[string]time.Duration{"duplicate_window": s.DuplicateWindow, "ack_wait": s.AckWait, "nack_delay": s.NackDelay} {
		if d <= 0 {
			bad(key, d, "must be positive")
		}
	}
	if s.MaxInFlight <= 0 {
		bad("max_in_flight", s.MaxInFlight, "must be positive")
	}
	if s.MaxAckPending < s.MaxInFlight {
		bad("max_ack_pending", s.MaxAckPending, fmt.Sprintf("must be at least max_in_flight (%d)", s.MaxInFlight))
	}
	return errors.Join(errs...)
}

// CheckURL checks bus.url: one or more nats://, tls://, ws:// or wss:// URLs separated by commas.
func CheckURL(raw string) error {
	for _, part := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			return fmt.Errorf("bus.url %q: not a NATS URL (want nats://host:4222, tls://, ws:// or wss://, several separated by commas)", redacted(raw))
		}
	}
	return nil
}

// redacted returns bus.url with the credentials of every server replaced.
func redacted(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		} else if err != nil && strings.Contains(p, "@") {
			parts[i] = "(unparsable URL with credentials)"
		}
	}
	return strings.Join(parts, ",")
}

// Open connects to the NATS servers at rawURL (bus.url). It fails when the URL is bad, the settings
// are invalid, no server answers, or JetStream is not enabled. Once open, the connection reconnects
// for ever.
func Open(ctx context.Context, rawURL string, s Settings, log watermill.LoggerAdapter) (*Broker, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("bus.nats: %w", err)
	}
	if err := CheckURL(rawURL); err != nil {
		return nil, err
	}
	if log == nil {
		log = watermill.NopLogger{}
	}
	host, _ := os.Hostname()
	nc, err := natsio.Connect(rawURL, natsio.Name(fmt.Sprintf("sluice %s-%d", host, os.Getpid())),
		natsio.MaxReconnects(-1), natsio.ReconnectWait(time.Second), natsio.ReconnectBufSize(-1),
		natsio.DisconnectErrHandler(func(_ *natsio.Conn, err error) {
			if err != nil { // nil: closed
				log.Error("Disconnected from NATS; reconnecting", err, nil)
			}
		}),
		natsio.ReconnectHandler(func(c *natsio.Conn) {
			log.Info("Reconnected to NATS", watermill.LogFields{"server": c.ConnectedUrlRedacted()})
		}))
	if err != nil {
		return nil, fmt.Errorf("bus.url %q: NATS does not answer: %s", redacted(rawURL), strings.ReplaceAll(err.Error(), rawURL, redacted(rawURL)))
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus.url %q: JetStream is not available there (run nats-server with -js): %w", redacted(rawURL), err)
	}
	return &Broker{s: s, nc: nc, js: js, log: log, declared: map[string][]string{}}, nil
}

// Broker is an open NATS JetStream broker.
type Broker struct {
	s   Settings
	nc  *natsio.Conn
	js  jetstream.JetStream
	log watermill.LoggerAdapter

	open closing.Set // the subscribers

	mu       sync.Mutex
	declared map[string][]string // the groups declared per topic: declared again when the stream is lost
}

var _ brokers.Broker = (*Broker)(nil)

var errClosed = errors.New("brokers/nats: broker closed")

// Publisher returns the publisher of chunk messages: one JetStream publish per message, with its
// UUID as Nats-Msg-Id, each returning once acknowledged.
func (b *Broker) Publisher() message.Publisher { return publisher{b} }

// Subscriber returns a member of group.
func (b *Broker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("brokers/nats: the consumer group is empty")
	}
	s := &Subscriber{b: b, group: group}
	if !b.open.Add(s.Close) {
		return nil, errClosed
	}
	return s, nil
}

// Declare creates or updates the stream of topic and a durable consumer per group. A stream that
// does not exist yet is created closed to publishes (max_msg_size 1: sluice's messages, headers
// included, are all refused with "message size exceeds maximum allowed") and opened only once the
// consumers exist: with interest retention a message published while a stream has no consumer is
// acknowledged and dropped (the server skips it, and remembers its Nats-Msg-Id). A publisher that
// meets a closed stream declares it itself (see publisher.Publish): a member that stopped between
// the two steps does not leave it closed.
func (b *Broker) Declare(ctx context.Context, topic string, groups []string) error {
	if err := checkSubject(topic); err != nil {
		return err
	}
	stream := StreamName(topic)
	// Refused as "already in use" when the stream exists open (a different configuration); a
	// closed one that another member is declaring is returned as is.
	_, err := b.js.CreateStream(ctx, b.streamConfig(topic, true))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("brokers/nats: creating stream %s of topic %q: %w", stream, topic, err)
	}
	for _, g := range groups {
		if _, err := b.consumer(ctx, topic, g); err != nil {
			return err
		}
		b.mu.Lock()
		if !slices.Contains(b.declared[topic], g) {
			b.declared[topic] = append(b.declared[topic], g)
		}
		b.mu.Unlock()
	}
	// An update, not a creation: a stream deleted meanwhile must not come back without its consumers.
	if _, err := b.js.UpdateStream(ctx, b.streamConfig(topic, false)); err != nil {
		return fmt.Errorf("brokers/nats: updating stream %s of topic %q: %w", stream, topic, err)
	}
	return nil
}

// streamConfig is the configuration of topic's stream: closed to publishes while its consumers are
// being created.
func (b *Broker) streamConfig(topic string, closed bool) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        StreamName(topic),
		Description: "sluice topic " + topic,
		Subjects:    []string{topic},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    orUnlimited(b.s.MaxBytes),
		MaxMsgs:     -1,
		MaxAge:      0,
		Replicas:    b.s.Replicas,
		Duplicates:  b.s.DuplicateWindow,
	}
	if closed {
		c.MaxMsgSize = 1
	}
	return c
}

// lossSettle is how long a member that met the loss of a stream or consumer waits before it
// declares them again. nats-server answers for a stream it is deleting as if it were gone (stream
// not found, publishes without a responder, pending pull requests released with 409 Consumer
// Deleted) before it removes the stream's directory: server/stream.go, (*stream).stop, takes the
// stream out of the account's map first, stops the consumers, and calls store.Delete last (v2.9.10,
// the server CI runs, and still so after v2.14). A stream created again under the same name
// meanwhile gets the same directory, removed under it when the deletion ends: its publishes then
// fail ("error opening msg block file") or are acknowledged and never delivered. Deleting a small
// stream took about 20 ms here; the file store retries a failed removal for up to 1 s.
const lossSettle = 2 * time.Second

// declareAgain declares topic again with every group declared for it so far: after the stream (or
// a consumer) was lost, as a NATS whose store was wiped or an operator's delete loses them.
// Interest retention keeps only what some consumer will read, so the stream comes back with its
// consumers. It waits lossSettle first (or until ctx ends), so that a deletion under way is over.
// A stream that another member is declaring (cause: beingDeclared) is declared at once: it was
// created after that member's wait.
func (b *Broker) declareAgain(ctx context.Context, topic string, cause error) error {
	b.mu.Lock()
	groups := slices.Clone(b.declared[topic])
	b.mu.Unlock()
	if beingDeclared(cause) {
		return b.Declare(ctx, topic, groups)
	}
	b.log.Info("The stream or a consumer is gone: declaring them again once a deletion under way is over", watermill.LogFields{"topic": topic, "groups": groups, "cause": cause.Error(), "wait": lossSettle.String()})
	t := time.NewTimer(lossSettle)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	return b.Declare(ctx, topic, groups)
}

// lost says whether err means that the stream or the consumer does not exist (any more): a publish
// that no stream answered, a pull request released by the consumer's deletion, or not found.
func lost(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

// beingDeclared says whether err is the refusal of a stream that a member is declaring (see Declare).
func beingDeclared(err error) bool { return errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) }

func orUnlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// consumer creates or updates the durable consumer of group on topic's stream.
func (b *Broker) consumer(ctx context.Context, topic, group string) (jetstream.Consumer, error) {
	c, err := b.js.CreateOrUpdateConsumer(ctx, StreamName(topic), jetstream.ConsumerConfig{
		Durable:       ConsumerName(group),
		Description:   "sluice group " + group,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.s.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: b.s.MaxAckPending,
		FilterSubject: topic,
	})
	if err != nil {
		return nil, fmt.Errorf("brokers/nats: creating consumer %s of stream %s (group %q): %w", ConsumerName(group), StreamName(topic), group, err)
	}
	return c, nil
}

// Close closes the subscribers (naking what they hold), then the connection.
func (b *Broker) Close() error { return b.open.Close(b.closeConnection) }

// closeConnection sends what the connection still holds (the naks and acks sent last), then closes it.
func (b *Broker) closeConnection() error {
	var err error
	if b.nc.IsConnected() {
		err = b.nc.FlushTimeout(5 * time.Second)
	}
	b.nc.Close()
	return err
}

// StreamName is the JetStream stream of topic.
func StreamName(topic string) string { return escapeName(topic) }

// ConsumerName is the durable consumer of group.
func ConsumerName(group string) string { return escapeName(group) }

// escapeName writes every byte that is not a letter, a digit or "-" as _XX (hex): JetStream names
// refuse ".", "*", ">", white space and path separators, and "_" is escaped so that two names never
// meet.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return b.String()
}

// checkSubject refuses a topic that is no literal NATS subject.
func checkSubject(topic string) error {
	for _, tok := range strings.Split(topic, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("brokers/nats: topic %q is not a NATS subject (dot-separated tokens, none empty, no white space, no * or >)", topic)
		}
	}
	return nil
}
