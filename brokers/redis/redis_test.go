package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/brokers/redis"
	"github.com/sluicelog/sluice/internal/testenv"
)

// cleaned is a broker whose declared streams are deleted when the test ends.
type cleaned struct {
	*redis.Broker
	t testing.TB
}

func (c cleaned) Declare(ctx context.Context, topic string, groups []string) error {
	cl := client(c.t)
	c.t.Cleanup(func() { _ = cl.Del(context.Background(), topic).Err() })
	return c.Broker.Declare(ctx, topic, groups)
}

func open(t testing.TB, s redis.Settings) cleaned {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := redis.Open(ctx, testenv.Redis(t), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return cleaned{Broker: b, t: t}
}

func client(t testing.TB) *goredis.Client {
	t.Helper()
	opts, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The conformance suite, with the default settings: a closed member's entries are claimed within
// claim_interval, a nacked one after nack_delay.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokers.Broker { return open(t, redis.DefaultSettings()) },
		brokertest.Options{Redelivery: 15 * time.Second})
}

func receive(t *testing.T, ch <-chan *message.Message, wait time.Duration) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
		return nil
	}
}

func subscribe(t *testing.T, b cleaned, group, topic string) <-chan *message.Message {
	t.Helper()
	s, err := b.Subscriber(group)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// A member killed with kill -9 holds entries that nobody acknowledges: once idle for claim_idle they
// go to a live member.
func TestDeadMembersEntriesAreClaimed(t *testing.T) {
	takeOver(t, redis.Settings{ClaimIdle: time.Second, ClaimInterval: 200 * time.Millisecond, NackDelay: 100 * time.Millisecond, MaxInFlight: 4, TrimInterval: time.Minute}, "killed")
}

// A process restarted under the same consumer name takes back its own pending entries at once, not
// after claim_idle.
func TestRestartedMemberTakesBackItsEntries(t *testing.T) {
	s := redis.DefaultSettings()
	s.Consumer, s.ClaimIdle = "worker-7", time.Hour
	takeOver(t, s, "worker-7-1") // the previous life of the process (its first subscriber of the group is "-1")
}

// takeOver publishes a chunk that the consumer before reads and never acknowledges, and checks that a
// subscriber with settings s gets it.
func takeOver(t *testing.T, s redis.Settings, before string) {
	b := open(t, s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(3)
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	c := client(t)
	if err := c.XReadGroup(context.Background(), &goredis.XReadGroupArgs{Group: g[0], Consumer: before, Streams: []string{topic, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	m := receive(t, subscribe(t, b, g[0], topic), 30*time.Second)
	if m.UUID != sent.UUID {
		t.Fatalf("got %s, want %s", m.UUID, sent.UUID)
	}
	m.Ack()
	waitPending(t, c, topic, g[0], 0)
}

func waitPending(t *testing.T, c *goredis.Client, stream, group string, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := c.XPending(context.Background(), stream, group).Result()
		if err != nil {
			t.Fatal(err)
		}
		if p.Count == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries pending in group %s, want %d", p.Count, group, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A live member that holds an entry longer than claim_idle (a slow batch) keeps it: its heartbeat
// resets the entry's idle time, so another member does not get a copy.
func TestLiveMemberKeepsItsEntries(t *testing.T) {
	s := redis.DefaultSettings()
	s.ClaimIdle, s.ClaimInterval, s.NackDelay = 4*time.Second, 100*time.Millisecond, time.Second
	topic, g := brokertest.Names(t, "a")
	holder := open(t, s)
	if err := holder.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := holder.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	held := receive(t, subscribe(t, holder, g[0], topic), 30*time.Second)
	other := subscribe(t, open(t, s), g[0], topic)
	select {
	case m := <-other:
		t.Fatalf("the other member got %s while a live member held it", m.UUID)
	case <-time.After(2*s.ClaimIdle + 2*time.Second):
	}
	held.Ack()
	waitPending(t, client(t), topic, g[0], 0)
	select {
	case m := <-other:
		t.Fatalf("the other member got %s after it was acknowledged", m.UUID)
	case <-time.After(time.Second):
	}
}

// Trimming removes only what every group acknowledged: a group that has read nothing keeps the whole
// stream, and a group's lowest pending entry bounds it.
func TestTrimKeepsWhatAGroupHasNotAcknowledged(t *testing.T) {
	b := open(t, redis.DefaultSettings())
	c := client(t)
	ctx := context.Background()
	topic, g := brokertest.Names(t, "fast", "slow")
	if err := b.Declare(ctx, topic, g); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := b.Publisher().Publish(topic, brokertest.Chunk(1)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(group string) []goredis.XMessage {
		xs, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{topic, ">"}, Count: 100}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return xs[0].Messages
	}
	ack := func(group string, msgs []goredis.XMessage) {
		for _, m := range msgs {
			if err := c.XAck(ctx, topic, group, m.ID).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	trimTo := func(want int64) {
		t.Helper()
		if _, err := redis.Trim(ctx, c, topic); err != nil {
			t.Fatal(err)
		}
		if n := c.XLen(ctx, topic).Val(); n != want {
			t.Fatalf("XLEN = %d after trimming, want %d", n, want)
		}
	}
	ack(g[0], read(g[0]))
	trimTo(20) // "slow" has read nothing
	slow := read(g[1])
	ack(g[1], slow[:10])
	trimTo(10) // "slow" has 10 pending, from the 11th
	ack(g[1], slow[10:])
	trimTo(1) // everything acknowledged: the last entry delivered stays
}

// Redis restarted without persistence lost the stream and its groups: a subscription recreates its
// group and gets what is published after the restart.
func TestGroupLostWithTheStreamIsCreatedAgain(t *testing.T) {
	s := redis.DefaultSettings()
	b := open(t, s)
	topic, g := brokertest.Names(t, "a")
	if err := b.Declare(context.Background(), topic, g); err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, b, g[0], topic)
	c := client(t)
	time.Sleep(100 * time.Millisecond) // let the subscription read once (it reads again after the loss anyway)
	if err := c.Del(context.Background(), topic).Err(); err != nil {
		t.Fatal(err)
	}
	sent := brokertest.Chunk(1)
	if err := b.Publisher().Publish(topic, sent); err != nil { // XADD creates the stream, with no group
		t.Fatal(err)
	}
	m := receive(t, ch, 30*time.Second)
	if m.UUID != sent.UUID {
		t.Fatalf("got %s, want %s", m.UUID, sent.UUID)
	}
	m.Ack()
}

func TestOpenRefusesABadURL(t *testing.T) {
	brokertest.RefusesBadURLs(t, redis.Name, map[string]string{
		"":                                 "not a Redis URL",
		"127.0.0.1:6379":                   "not a Redis URL",
		"http://127.0.0.1:6379":            "not a Redis URL",
		"redis://127.0.0.1:6379/notadb":    "invalid database number",
		"redis://u:hunter2@127.0.0.1:1/0":  "Redis does not answer",
		"redis://127.0.0.1:6379/0?bogus=1": "bogus",
		"redis://u:hunter2@127.0.0.1:x/0":  "bus.url",
		"rediss://u:hunter2@[::1:6379/0":   "bus.url",
	})
}

// The section bus.redis loads from YAML and the environment, and its errors name its keys.
func TestSettingsFromConfig(t *testing.T) {
	c, err := brokertest.LoadConfig(t, "bus:\n  driver: redis\n  url: redis://127.0.0.1:6379/0\n  redis:\n    consumer: web-1\n", []string{"SLUICE_BUS_REDIS_CLAIM_IDLE=30s"})
	if err != nil {
		t.Fatal(err)
	}
	got := c.BusSettings().(redis.Settings)
	want := redis.DefaultSettings()
	want.Consumer, want.ClaimIdle = "web-1", 30*time.Second
	if got != want {
		t.Errorf("bus.redis = %+v, want %+v", got, want)
	}
	brokertest.ConfigErrors(t, map[string]string{
		"bus:\n  redis:\n    claim_idle: 0s\n":      "bus.redis.claim_idle",
		"bus:\n  redis:\n    claim_interval: -1s\n": "bus.redis.claim_interval",
		"bus:\n  redis:\n    nack_delay: 20s\n":     "bus.redis.nack_delay",
		"bus:\n  redis:\n    max_in_flight: 0\n":    "bus.redis.max_in_flight",
		"bus:\n  redis:\n    trim_interval: 0s\n":   "bus.redis.trim_interval",
		"bus:\n  redis:\n    consumer: \"a b\"\n":   "bus.redis.consumer",
		"bus:\n  redis:\n    maxlen: 5\n":           "bus.redis.maxlen",
		"bus:\n  driver: redis\n  url: \"\"\n":      "bus.url",
	})
}

// go test -run X -bench . ./brokers/redis/: full chunks published (4 at once) and consumed.
func BenchmarkChunks(b *testing.B) {
	brokertest.Bench(b, func(tb testing.TB) brokers.Broker { return open(tb, redis.DefaultSettings()) })
}

// kill -9 of a Redis that persists every write (a server of this test's own: appendonly yes,
// appendfsync always): every acknowledged publish is there after the restart, and every entry the
// group had not acknowledged is delivered. (The Redis of this machine kind persists nothing: there a
// restart loses the stream, as TestGroupLostWithTheStreamIsCreatedAgain shows.)
func TestServerKilledWithAppendOnlyLosesNothingAcknowledged(t *testing.T) {
	srv := testenv.StartServer(t, "redis-server", func(port int, dir string) []string {
		return []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always"}
	})
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", srv.Port)
	s := redis.DefaultSettings()
	s.ClaimIdle, s.ClaimInterval, s.NackDelay = 2*time.Second, 200*time.Millisecond, time.Second
	brokertest.SurvivesKill(t, func(t *testing.T) brokers.Broker {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := redis.Open(ctx, url, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}, func() { srv.Kill(); srv.Start() })
}
