// Package redis owns the Redis Streams broker driver (bus.driver: redis, bus.url redis://host:6379/0,
// its settings the section bus.redis): a stream per topic (the stream's key is the topic), a consumer
// group per group, and the trimming that keeps the stream's length bounded without dropping an entry
// that some group has not acknowledged.
//
// Guarantees and costs:
//   - Publish returns nil once Redis replied to XADD for every message (the stock watermill-redisstream
//     Publisher; no MAXLEN: nothing is trimmed at publish time). The entry is then in the primary's
//     memory: it survives a Redis kill -9 only as far as the server persists (appendonly yes with
//     appendfsync always loses nothing; everysec up to a second; the Redis of the CI machine runs with
//     --save "" --appendonly no and loses every stream and group on a restart). Open logs a warning
//     when the server persists nothing. Replication is asynchronous: a failover can lose the last
//     writes.
//   - Delivery is at least once, in stream order per member, with no order across members. Each
//     subscription hands out up to max_in_flight entries unacknowledged at once (XREADGROUP COUNT),
//     acknowledges one with XACK when its message is acked, and tells Redis every claim_idle/3 that
//     the entries it holds are still being worked on (an XCLAIM to itself that resets their idle
//     time, only for entries it still owns), so a live member that takes long keeps its entries.
//   - A member killed with kill -9: its entries stay pending and, once idle for claim_idle (10 s),
//     another member (or the same process restarted) claims them with XAUTOCLAIM, which every
//     subscription runs every claim_interval (2 s): handed over within 10-12 s. A member that closes
//     releases what it holds (their idle time set to claim_idle): claimed within claim_interval.
//     A nacked entry becomes claimable after nack_delay (2 s), by any member.
//   - Each process's consumer name is bus.redis.consumer, or host-pid-random when empty, plus "-N"
//     per subscriber of a group in the process; a member restarted under the same name first takes
//     back its own pending entries. Consumers with nothing pending and idle for an hour are removed.
//   - The stream's length: every trim_interval (10 s) each worker computes, over every group of the
//     stream, the lowest entry still pending (or, with none pending, the last entry delivered) and
//     trims below it with XTRIM MINID (exact). So the stream holds what the slowest group has not
//     acknowledged, and nothing it has not read is ever trimmed. The risk is the other way: a group
//     that nobody reads any more (a route removed from every worker) keeps everything after its
//     position, and the stream grows until Redis reaches maxmemory; then XADD fails, the web nodes
//     keep their chunks in their bounded local bus and count drops. Delete such a group
//     (XGROUP DESTROY) when a route is removed for good.
//   - A Redis restart that lost the stream (no persistence): each subscription recreates its group
//     (from the stream's start) when Redis answers NOGROUP, so it gets what is published after the
//     restart; what the stream held before is lost.
//
// Why not the stock watermill-redisstream Subscriber: it hands out one message per subscription and
// waits for its ack before reading the next (a batch subscriber cannot gather chunks over it), nacks
// loop with no delay by default, and a live consumer that holds a message longer than MaxIdleTime
// loses it to another member (a duplicate on every slow batch); its Publisher and its marshalling
// (the message's UUID and msgpack metadata in the entry) are used as they are.
//
// This package imports nothing of sluice but brokers (and its internal delivery and closing
// packages) and subscribers (for SettingError).
package redis

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/internal/closing"
	"github.com/sluicelog/sluice/subscribers"
)

// Name is the driver's name: bus.driver: redis, settings under bus.redis.
const Name = "redis"

func init() {
	brokers.Register(brokers.DriverOf(Name,
		"redis://[user:password@]host:6379/db (rediss:// for TLS; go-redis options as query parameters, e.g. ?pool_size=20)",
		DefaultSettings, Open))
}

// Settings are the section bus.redis.
type Settings struct {
	// Consumer is this process's consumer name in every group; empty (the default) means
	// host-pid-random. Give each process a stable name of its own (a pod name) and a restarted
	// process takes back its own pending entries at once instead of after claim_idle.
	Consumer string `yaml:"consumer"`
	// ClaimIdle is how long an entry handed to a member stays unclaimable by the others: a dead
	// member's entries are handed over after it (plus claim_interval). Live members touch their
	// entries every ClaimIdle/3.
	ClaimIdle time.Duration `yaml:"claim_idle"`
	// ClaimInterval is how often each subscription looks for entries to claim (XAUTOCLAIM).
	ClaimInterval time.Duration `yaml:"claim_interval"`
	// NackDelay is how long a nacked entry waits before a member may claim it again. It must be
	// less than claim_idle.
	NackDelay time.Duration `yaml:"nack_delay"`
	// MaxInFlight bounds the entries each subscription holds unacknowledged.
	MaxInFlight int `yaml:"max_in_flight"`
	// TrimInterval is how often each worker trims the streams it reads below what every group has
	// acknowledged.
	TrimInterval time.Duration `yaml:"trim_interval"`
}

// DefaultSettings: a dead member's entries go to another within 10-12 s, nacked entries come back
// after 2 s, 32 entries in flight per subscription, trimming every 10 s.
func DefaultSettings() Settings {
	return Settings{ClaimIdle: 10 * time.Second, ClaimInterval: 2 * time.Second, NackDelay: 2 * time.Second, MaxInFlight: 32, TrimInterval: 10 * time.Second}
}

// Validate returns every invalid setting, each a *subscribers.SettingError naming its key.
func (s Settings) Validate() error {
	var errs []error
	positive := func(key string, ok bool, v any) {
		if !ok {
			errs = append(errs, &subscribers.SettingError{Key: key, Value: v, Msg: "must be positive"})
		}
	}
	positive("claim_idle", s.ClaimIdle > 0, s.ClaimIdle)
	positive("claim_interval", s.ClaimInterval > 0, s.ClaimInterval)
	positive("nack_delay", s.NackDelay > 0, s.NackDelay)
	positive("max_in_flight", s.MaxInFlight > 0, s.MaxInFlight)
	positive("trim_interval", s.TrimInterval > 0, s.TrimInterval)
	if s.NackDelay >= s.ClaimIdle && s.ClaimIdle > 0 {
		errs = append(errs, &subscribers.SettingError{Key: "nack_delay", Value: s.NackDelay, Msg: fmt.Sprintf("must be less than claim_idle (%s)", s.ClaimIdle)})
	}
	if strings.ContainsAny(s.Consumer, " \t\r\n") {
		errs = append(errs, &subscribers.SettingError{Key: "consumer", Value: strconv.Quote(s.Consumer), Msg: "must not contain white space"})
	}
	return errors.Join(errs...)
}

// ParseURL returns the client options of bus.url, with an error naming bus.url (and no password).
func ParseURL(raw string) (*goredis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		return nil, fmt.Errorf("bus.url %q: not a Redis URL (want redis://host:6379/0, rediss:// or unix://)", redacted(raw))
	}
	opts, err := goredis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("bus.url %q: %s", redacted(raw), strings.ReplaceAll(err.Error(), raw, redacted(raw)))
	}
	return opts, nil
}

func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Open connects to the Redis at rawURL (bus.url). It fails when the URL is bad, the settings are
// invalid, or Redis does not answer PING.
func Open(ctx context.Context, rawURL string, s Settings, log watermill.LoggerAdapter) (*Broker, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("bus.redis: %w", err)
	}
	opts, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = watermill.NopLogger{}
	}
	client := goredis.NewClient(opts)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("bus.url %q: Redis does not answer: %w", redacted(rawURL), err)
	}
	warnWithoutPersistence(ctx, client, log)
	// The stock Publisher closes its client on Close: it gets one of its own.
	stock, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: goredis.NewClient(opts)}, log)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	consumer := s.Consumer
	if consumer == "" {
		host, _ := os.Hostname()
		consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), watermill.NewShortUUID()[:6])
	}
	bctx, cancel := context.WithCancel(context.Background())
	return &Broker{s: s, client: client, pub: closing.NewPublisher(stock, errClosed), log: log, consumer: consumer, ctx: bctx, cancel: cancel,
		trimming: map[string]bool{}, members: map[string]int{}}, nil
}

// warnWithoutPersistence logs a warning when the server keeps nothing on disk (a managed Redis that
// refuses CONFIG is not asked twice).
func warnWithoutPersistence(ctx context.Context, c *goredis.Client, log watermill.LoggerAdapter) {
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		return
	}
	if cfg["appendonly"] == "no" && cfg["save"] == "" {
		log.Info("Redis keeps nothing on disk (appendonly no, save \"\"): a Redis restart loses every chunk not yet written by a worker; set appendonly yes for durability", nil)
	}
}

// Broker is an open Redis Streams broker.
type Broker struct {
	s        Settings
	client   *goredis.Client // subscriptions, Declare, trimming
	pub      *closing.Publisher
	log      watermill.LoggerAdapter
	consumer string

	ctx    context.Context // the trimming loops'; Close cancels it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	open closing.Set // the subscribers

	mu       sync.Mutex
	trimming map[string]bool // streams with a trimming loop
	members  map[string]int  // subscribers made per group
}

var _ brokers.Broker = (*Broker)(nil)

// Publisher returns the stock watermill-redisstream Publisher (XADD per message, no trimming),
// guarded so that Close waits for the publishes under way.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a member of group.
func (b *Broker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("brokers/redis: the consumer group is empty")
	}
	b.mu.Lock()
	b.members[group]++
	s := &Subscriber{b: b, group: group, consumer: fmt.Sprintf("%s-%d", b.consumer, b.members[group])}
	b.mu.Unlock()
	if !b.open.Add(s.Close) {
		return nil, errClosed
	}
	return s, nil
}

var errClosed = errors.New("brokers/redis: broker closed")

// Declare creates the stream topic and a group per name, each reading from the stream's start (a
// group declared after entries were published gets those the stream still holds).
func (b *Broker) Declare(ctx context.Context, topic string, groups []string) error {
	for _, g := range groups {
		if err := b.createGroup(ctx, topic, g); err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) createGroup(ctx context.Context, stream, group string) error {
	err := b.client.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("brokers/redis: creating group %q of stream %q: %w", group, stream, err)
	}
	return nil
}

// Close closes the subscribers (releasing what they hold), the publisher and the connections.
func (b *Broker) Close() error {
	return b.open.Close(b.stopTrimming, b.pub.Close, b.client.Close)
}

// stopTrimming ends the trimming loops and waits for them.
func (b *Broker) stopTrimming() error {
	b.mu.Lock()
	b.cancel() // under mu: trim starts no loop once the context is done
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// trim starts the trimming loop of stream, once per broker.
func (b *Broker) trim(stream string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.trimming[stream] || b.ctx.Err() != nil {
		return
	}
	b.trimming[stream] = true
	b.wg.Go(func() {
		t := time.NewTicker(b.s.TrimInterval)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
			}
			if _, err := Trim(b.ctx, b.client, stream); err != nil && b.ctx.Err() == nil {
				b.log.Error("Could not trim the stream", err, watermill.LogFields{"stream": stream})
			}
			if err := forgetConsumers(b.ctx, b.client, stream); err != nil && b.ctx.Err() == nil {
				b.log.Error("Could not remove the stream's idle consumers", err, watermill.LogFields{"stream": stream})
			}
		}
	})
}

// Trim removes the entries of stream that every group has acknowledged: those below the lowest
// entry pending in some group, or below the last delivered one where nothing is pending. It returns
// the number of entries removed; a stream without groups is not trimmed.
func Trim(ctx context.Context, c goredis.Cmdable, stream string) (int64, error) {
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) == 0 {
		return 0, err
	}
	var bound string
	for _, g := range groups {
		keep := g.LastDeliveredID
		if g.Pending > 0 {
			p, err := c.XPending(ctx, stream, g.Name).Result()
			if err != nil {
				return 0, err
			}
			if p.Count > 0 && lessID(p.Lower, keep) {
				keep = p.Lower
			}
		}
		if bound == "" || lessID(keep, bound) {
			bound = keep
		}
	}
	if bound == "" || bound == "0-0" {
		return 0, nil
	}
	return c.XTrimMinID(ctx, stream, bound).Result()
}

// lessID says whether the stream entry id a ("ms-seq") is below b.
func lessID(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || (am == bm && as < bs)
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// consumerExpiry is how long a consumer with nothing pending may stay idle before it is removed
// from its group (a live one reads at least every second).
const consumerExpiry = time.Hour

// forgetConsumers removes, in every group of stream, the consumers that have nothing pending and
// have been idle for consumerExpiry: the names of processes that are gone.
func forgetConsumers(ctx context.Context, c goredis.Cmdable, stream string) error {
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return err
	}
	for _, g := range groups {
		consumers, err := c.XInfoConsumers(ctx, stream, g.Name).Result()
		if err != nil {
			return err
		}
		for _, k := range consumers {
			if k.Pending == 0 && k.Idle >= consumerExpiry {
				if err := c.XGroupDelConsumer(ctx, stream, g.Name, k.Name).Err(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
