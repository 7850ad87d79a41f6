package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// subscriber is a member of one consumer group per Subscribe call.
type subscriber struct {
	broker *Broker
	group  string

	mu     sync.Mutex
	closed bool
	subs   []*subscription
}

// Subscribe joins the subscriber's group as a new member reading topic. The channel closes when ctx
// is done or the subscriber is closed; what the member had not acknowledged then goes to the member
// that gets its partition.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("kafka: Subscribe: the subscriber is closed")
	}
	sub, err := subscribe(ctx, s.broker, s.group, topic)
	if err != nil {
		return nil, err
	}
	s.subs = append(s.subs, sub)
	return sub.out, nil
}

// Close ends every subscription, committing what each had acknowledged, and waits for them.
func (s *subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for _, sub := range subs {
		sub.close()
	}
	return nil
}

// subscription is one group member: a client that polls records one at a time while fewer than
// max_in_flight of its messages are unacknowledged, hands each out as a message, and marks for
// commit, per partition, the offset below which every message has been acknowledged (kgo commits the
// marks every commit_interval, when partitions are revoked and when the client leaves).
type subscription struct {
	client   *kgo.Client
	group    string
	topic    string
	settings Settings
	log      watermill.LoggerAdapter
	out      chan *message.Message
	slots    chan struct{} // one per unacknowledged message

	ctx    context.Context // done when the subscription closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // run and the deliveries
	once   sync.Once

	mu     sync.Mutex
	tracks map[int32]*track // the partitions this member owns and has fetched from
}

func subscribe(ctx context.Context, b *Broker, group, topic string) (*subscription, error) {
	s := &subscription{group: group, topic: topic, settings: b.settings,
		log: b.log.With(watermill.LogFields{"topic": topic, "group": group}),
		out: make(chan *message.Message), slots: make(chan struct{}, b.settings.MaxInFlight),
		tracks: map[int32]*track{}}
	opts := append(b.commonOpts(),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // nothing committed: never skip what is there
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(b.settings.CommitInterval),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(b.settings.SessionTimeout),
		kgo.HeartbeatInterval(b.settings.HeartbeatInterval),
		kgo.RebalanceTimeout(b.settings.RebalanceTimeout),
		// A partition assigned while a fetch long-polls the others joins the next fetch: a short
		// wait keeps a hand-over from waiting kgo's default 5 s for it.
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.FetchMaxBytes(int32(max(b.settings.MaxMessageBytes, 16<<20))),
		kgo.BrokerMaxReadBytes(int32(max(b.settings.MaxMessageBytes, 16<<20)+1<<20)),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	)
	if b.settings.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(b.settings.InstanceID))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscribe to %s in group %s: %w", topic, group, err)
	}
	s.client = client
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.run()
	context.AfterFunc(ctx, s.close)
	return s, nil
}

// run polls a record whenever a slot is free, and hands it to a delivery of its own.
func (s *subscription) run() {
	defer s.wg.Done()
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		fetches := s.client.PollRecords(s.ctx, 1)
		if s.ctx.Err() != nil || fetches.IsClientClosed() {
			s.client.AllowRebalance()
			<-s.slots
			return
		}
		failed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			failed = true
			s.log.Error("kafka: fetch", err, watermill.LogFields{"partition": partition})
		})
		var rec *kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { rec = r })
		var tr *track
		var p *pending
		if rec != nil { // registered before a rebalance may revoke its partition
			tr, p = s.track(rec)
		}
		s.client.AllowRebalance()
		if rec == nil {
			<-s.slots
			if failed { // kgo retries by itself; do not spin on a failing broker
				s.sleep(500 * time.Millisecond)
			}
			continue
		}
		s.wg.Add(1)
		go s.deliver(rec, tr, p)
	}
}

// deliver hands rec out until it is acknowledged (then marks the partition's new watermark) or the
// subscription closes; a nack hands it out again after the redelivery delay.
func (s *subscription) deliver(rec *kgo.Record, tr *track, p *pending) {
	defer s.wg.Done()
	defer func() { <-s.slots }()
	delay := s.settings.RedeliveryDelay
	for {
		msg := toMessage(rec)
		select {
		case s.out <- msg:
		case <-s.ctx.Done():
			return
		}
		select {
		case <-msg.Acked():
			s.acked(tr, p)
			return
		case <-msg.Nacked():
		case <-s.ctx.Done():
			select {
			case <-msg.Acked(): // acknowledged before the close, which then commits it
				s.acked(tr, p)
			default:
			}
			return
		}
		if !s.sleep(delay) {
			return
		}
		delay = min(2*delay, 32*s.settings.RedeliveryDelay)
	}
}

// acked marks the partition's new watermark for commit, when p moved it.
func (s *subscription) acked(tr *track, p *pending) {
	if head, ok := tr.ack(p); ok {
		s.client.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{s.topic: {tr.partition: head}})
	}
}

// sleep waits d, or less when the subscription closes; it reports whether it is still open.
func (s *subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// track registers rec with its partition's track, making one when the partition is new to this
// member (assigned since the last time it fetched from it).
func (s *subscription) track(rec *kgo.Record) (*track, *pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.tracks[rec.Partition]
	if tr == nil {
		tr = &track{partition: rec.Partition}
		s.tracks[rec.Partition] = tr
	}
	return tr, tr.add(rec)
}

// revoked forgets the revoked partitions (an acknowledgement that comes later marks nothing: the next
// owner has those messages again) and commits the marks before the partitions move.
func (s *subscription) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.forget(revoked)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		s.log.Error("kafka: commit acknowledged offsets before a rebalance", err, nil)
	}
}

// lost forgets partitions the member lost without a rebalance (its session expired): committing is
// no longer possible.
func (s *subscription) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.forget(lost)
}

func (s *subscription) forget(partitions map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range partitions[s.topic] {
		if tr := s.tracks[p]; tr != nil {
			tr.revoke()
			delete(s.tracks, p)
		}
	}
}

// close stops polling and handing out, marks what was acknowledged before it, leaves the group
// (committing the marks first) and closes the channel. Messages handed out and not acknowledged go to
// the partitions' next owner.
func (s *subscription) close() {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()      // the deliveries have marked what was acknowledged
		s.client.Close() // revokes everything: commits the marks, then leaves the group
		close(s.out)
	})
}

// track is a partition's offsets handed out by this member, in fetch order, and the watermark: the
// offset after the last one of an unbroken run of acknowledged messages from the start.
type track struct {
	partition int32

	mu      sync.Mutex
	pending []*pending
	revoked bool
}

type pending struct {
	offset int64
	epoch  int32
	acked  bool
}

func (t *track) add(rec *kgo.Record) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := &pending{offset: rec.Offset, epoch: rec.LeaderEpoch}
	t.pending = append(t.pending, p)
	return p
}

// ack acknowledges p and returns the new watermark when it moved (and the partition is still owned).
func (t *track) ack(p *pending) (kgo.EpochOffset, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.acked = true
	var head kgo.EpochOffset
	moved := false
	for len(t.pending) > 0 && t.pending[0].acked {
		head, moved = kgo.EpochOffset{Epoch: t.pending[0].epoch, Offset: t.pending[0].offset + 1}, true
		t.pending[0] = nil
		t.pending = t.pending[1:]
	}
	return head, moved && !t.revoked
}

func (t *track) revoke() {
	t.mu.Lock()
	t.revoked = true
	t.mu.Unlock()
}
