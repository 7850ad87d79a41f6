package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicelog/sluice/brokers/internal/delivery"
)

// Subscriber is a member of a consumer group: each Subscribe reads a stream in the group.
type Subscriber struct {
	b        *Broker
	group    string
	consumer string
	subs     delivery.Subscriptions
}

var _ message.Subscriber = (*Subscriber)(nil)

// Subscribe creates the group on the stream topic if it is missing and hands out its entries until
// ctx ends or Close.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.subs.Closed() {
		return nil, delivery.ErrClosed
	}
	if err := s.b.createGroup(ctx, topic, s.group); err != nil {
		return nil, err
	}
	src := &source{b: s.b, stream: topic, group: s.group, consumer: s.consumer, own: "0"}
	out, err := delivery.Subscribe(&s.subs, ctx, src, delivery.Options{MaxInFlight: s.b.s.MaxInFlight, Heartbeat: s.b.s.ClaimIdle / 3,
		Logger: s.b.log, Fields: watermill.LogFields{"stream": topic, "group": s.group, "consumer": s.consumer}})
	if err == nil {
		s.b.trim(topic)
	}
	return out, err
}

// Close ends the subscriptions, releasing the entries they hold to the group's other members.
func (s *Subscriber) Close() error { return s.subs.Close() }

// source is one subscription's side at Redis: entries are keyed by their id.
type source struct {
	b                       *Broker
	stream, group, consumer string

	own       string    // the next own pending entry to take back ("" when done)
	claimFrom string    // XAUTOCLAIM's cursor
	claimed   time.Time // the last XAUTOCLAIM
}

// readBlock bounds a blocking XREADGROUP, so that a subscription notices its end.
const readBlock = time.Second

func (r *source) Fetch(ctx context.Context, n int) ([]delivery.Item[string], error) {
	c := r.b.client
	if r.own != "" { // entries this consumer name held before (a restart under the same name)
		xs, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: r.group, Consumer: r.consumer, Streams: []string{r.stream, r.own}, Count: int64(n)}).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, r.recover(ctx, err)
		}
		msgs := entries(xs)
		r.own = ""
		if len(msgs) == n {
			r.own = msgs[len(msgs)-1].ID
		}
		if items := r.items(ctx, msgs); len(items) > 0 {
			return items, nil
		}
	}
	if since := time.Since(r.claimed); since >= r.b.s.ClaimInterval {
		r.claimed = time.Now()
		if r.claimFrom == "" {
			r.claimFrom = "0-0"
		}
		msgs, next, err := c.XAutoClaim(ctx, &goredis.XAutoClaimArgs{Stream: r.stream, Group: r.group, Consumer: r.consumer,
			MinIdle: r.b.s.ClaimIdle, Start: r.claimFrom, Count: int64(n)}).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, r.recover(ctx, err)
		}
		r.claimFrom = next
		if items := r.items(ctx, msgs); len(items) > 0 {
			return items, nil
		}
	}
	block := min(readBlock, r.b.s.ClaimInterval-time.Since(r.claimed))
	block = max(block, time.Millisecond) // 0 would block for ever
	xs, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: r.group, Consumer: r.consumer, Streams: []string{r.stream, ">"}, Count: int64(n), Block: block}).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, r.recover(ctx, err)
	}
	return r.items(ctx, entries(xs)), nil
}

// recover recreates the group when Redis lost it (a restart without persistence) and returns err
// otherwise.
func (r *source) recover(ctx context.Context, err error) error {
	if !strings.HasPrefix(err.Error(), "NOGROUP") {
		return err
	}
	r.b.log.Info("The consumer group is gone (Redis restarted without persistence?): creating it again", watermill.LogFields{"stream": r.stream, "group": r.group})
	return r.b.createGroup(ctx, r.stream, r.group)
}

func entries(xs []goredis.XStream) []goredis.XMessage {
	if len(xs) == 0 {
		return nil
	}
	return xs[0].Messages
}

// items decodes entries into messages. An entry that is gone (trimmed or deleted while pending) or
// that is no Watermill message is acknowledged and skipped, with an error logged for the latter.
func (r *source) items(ctx context.Context, msgs []goredis.XMessage) []delivery.Item[string] {
	items := make([]delivery.Item[string], 0, len(msgs))
	for _, x := range msgs {
		var m *message.Message
		var err error
		if len(x.Values) > 0 {
			m, err = redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(x.Values)
			if err == nil {
				items = append(items, delivery.Item[string]{Key: x.ID, Msg: m})
				continue
			}
			r.b.log.Error("Skipping a stream entry that is not a Watermill message", err, watermill.LogFields{"stream": r.stream, "id": x.ID})
		}
		_ = r.b.client.XAck(ctx, r.stream, r.group, x.ID).Err()
	}
	return items
}

func (r *source) Ack(ctx context.Context, id string) error {
	return r.b.client.XAck(ctx, r.stream, r.group, id).Err()
}

// Nack makes the entry claimable (by any member, this one included) after nack_delay.
func (r *source) Nack(ctx context.Context, id string) error {
	return r.setIdle(ctx, r.b.s.ClaimIdle-r.b.s.NackDelay, []string{id})
}

// Touch resets the idle time of the entries this consumer still owns.
func (r *source) Touch(ctx context.Context, ids []string) error { return r.setIdle(ctx, 0, ids) }

// Release makes the entries claimable at once.
func (r *source) Release(ctx context.Context, ids []string) error {
	return r.setIdle(ctx, r.b.s.ClaimIdle, ids)
}

// ownedIdle sets the idle time of the entries that are pending for this consumer (the others were
// acknowledged, or claimed by another member meanwhile: they are left alone).
var ownedIdle = goredis.NewScript(`
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    n = n + 1
  end
end
return n`)

func (r *source) setIdle(ctx context.Context, idle time.Duration, ids []string) error {
	args := make([]any, 0, 3+len(ids))
	args = append(args, r.group, r.consumer, idle.Milliseconds())
	for _, id := range ids {
		args = append(args, id)
	}
	if err := ownedIdle.Run(ctx, r.b.client, []string{r.stream}, args...).Err(); err != nil {
		return fmt.Errorf("brokers/redis: setting the idle time of %d entries: %w", len(ids), err)
	}
	return nil
}
