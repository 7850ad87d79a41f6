package subscribers_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// waitFor is how long a real-time test waits for something that should happen at once: generous, so
// that a slow or loaded machine never fails a test; a test that passes never waits for it.
const waitFor = 10 * time.Second

// drainWait is subscribers.drainWait: how soon a draining batch subscriber hands out a batch.
const drainWait = 20 * time.Millisecond

// events returns n fresh events.
func events(n int, msg string) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		out[i] = event.New(event.LevelInfo, event.KindApp, msg)
	}
	return out
}

// chunk returns a chunk message in the bus format of package event: NDJSON payload, the number of
// events and the format in its metadata, a fresh id.
func chunk(t testing.TB, evs ...*event.Event) *message.Message {
	t.Helper()
	payload, err := event.Encode(evs...)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage(event.NewID().String(), payload)
	m.Metadata.Set(event.MetadataEvents, strconv.Itoa(len(evs)))
	m.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	return m
}

// rawChunk returns a chunk message with payload as it is (lines that may not be events).
func rawChunk(payload string, lines int) *message.Message {
	m := message.NewMessage(event.NewID().String(), []byte(payload))
	m.Metadata.Set(event.MetadataEvents, strconv.Itoa(lines))
	m.Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	return m
}

// fakeSub is a message.Subscriber of one subscription whose messages the test puts in its channel.
type fakeSub struct {
	ch     chan *message.Message
	mu     sync.Mutex
	topics []string
	closed bool
}

func newFakeSub(buffer int) *fakeSub { return &fakeSub{ch: make(chan *message.Message, buffer)} }

func (f *fakeSub) Subscribe(_ context.Context, topic string) (<-chan *message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topics = append(f.topics, topic)
	return f.ch, nil
}

func (f *fakeSub) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeSub) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// put hands the chunks to the subscription (the channel must have room: put never waits).
func (f *fakeSub) put(t testing.TB, msgs ...*message.Message) {
	t.Helper()
	for _, m := range msgs {
		select {
		case f.ch <- m:
		default:
			t.Fatal("fake subscriber: channel full")
		}
	}
}

func newBatchSubscriber(t testing.TB, sub message.Subscriber, p subscribers.BatchPolicy, opts ...subscribers.BatchOption) *subscribers.BatchSubscriber {
	t.Helper()
	s, err := subscribers.NewBatchSubscriber(sub, p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func subscribe(t testing.TB, s *subscribers.BatchSubscriber, topic string) <-chan *message.Message {
	t.Helper()
	out, err := s.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// take returns the batch message the subscription has ready once every goroutine of the bubble is
// blocked (synctest), and fails when there is none.
func take(t testing.TB, out <-chan *message.Message) *message.Message {
	t.Helper()
	synctest.Wait()
	select {
	case m, ok := <-out:
		if !ok {
			t.Fatal("batch channel closed")
		}
		return m
	default:
		t.Fatal("no batch handed out")
		return nil
	}
}

// none fails when the subscription has a batch ready once every goroutine of the bubble is blocked.
func none(t testing.TB, out <-chan *message.Message) {
	t.Helper()
	synctest.Wait()
	select {
	case m, ok := <-out:
		if ok {
			evs, _ := subscribers.Contents(m)
			t.Fatalf("unexpected batch of %d events", len(evs))
		}
	default:
	}
}

// receive waits (real time) for the next batch message.
func receive(t testing.TB, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-out:
		if !ok {
			t.Fatal("batch channel closed")
		}
		return m
	case <-time.After(waitFor):
		t.Fatalf("no batch within %v", waitFor)
		return nil
	}
}

func eventIDs(evs []*event.Event) []uuid.UUID {
	ids := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// batchEvents returns the ids of a batch message's events, and fails on lines that are not events.
func batchEvents(t testing.TB, m *message.Message) []uuid.UUID {
	t.Helper()
	evs, bad := subscribers.Contents(m)
	if len(bad) > 0 {
		t.Fatalf("batch has %d bad lines: %v", len(bad), bad[0])
	}
	return eventIDs(evs)
}

func acked(m *message.Message) bool {
	select {
	case <-m.Acked():
		return true
	default:
		return false
	}
}

func nacked(m *message.Message) bool {
	select {
	case <-m.Nacked():
		return true
	default:
		return false
	}
}

// settled counts the chunk messages acked and nacked.
func settled(msgs []*message.Message) (ack, nack int) {
	for _, m := range msgs {
		if acked(m) {
			ack++
		}
		if nacked(m) {
			nack++
		}
	}
	return ack, nack
}

func TestNewBatchSubscriberRejectsBadConfig(t *testing.T) {
	good := subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1, MaxWait: 1, MaxConcurrentWrites: 1}
	if _, err := subscribers.NewBatchSubscriber(nil, good); err == nil || !strings.Contains(err.Error(), "Subscriber is required") {
		t.Errorf("nil subscriber: err = %v", err)
	}
	for _, c := range []struct {
		name string
		p    subscribers.BatchPolicy
		want []string
	}{
		{"events", subscribers.BatchPolicy{MaxEvents: -1, MaxBytes: 1, MaxWait: 1, MaxConcurrentWrites: 1}, []string{"max_events", "-1"}},
		{"bytes", subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 0, MaxWait: 1, MaxConcurrentWrites: 1}, []string{"max_bytes", "0"}},
		{"wait", subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1, MaxWait: -time.Second, MaxConcurrentWrites: 1}, []string{"max_wait", "-1s"}},
		{"writes", subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1, MaxWait: 1, MaxConcurrentWrites: 0}, []string{"max_concurrent_writes", "0"}},
	} {
		_, err := subscribers.NewBatchSubscriber(newFakeSub(0), c.p)
		if err == nil || !contains(err.Error(), append(c.want, "invalid config")...) {
			t.Errorf("%s: err = %v, want one naming %q", c.name, err, c.want)
		}
	}
	if err := good.Validate(); err != nil {
		t.Errorf("valid policy: %v", err)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestBatchIDIsStableForTheSameEvents(t *testing.T) {
	a := event.New(event.LevelInfo, event.KindApp, "a")
	c := event.New(event.LevelInfo, event.KindApp, "c")
	if subscribers.NewBatch([]*event.Event{a, c}).ID != subscribers.NewBatch([]*event.Event{c, a}).ID {
		t.Fatal("same events, different batch ids")
	}
	if subscribers.NewBatch([]*event.Event{a}).ID == subscribers.NewBatch([]*event.Event{c}).ID {
		t.Fatal("different events, same batch id")
	}
}

// A batch closes at MaxEvents; a chunk is never split: one that would take the batch over MaxEvents
// opens the next batch. The rest goes out MaxWait after its first event. A batch message carries
// its chunks' payloads in order, its event count, and the id of its events.
func TestBatchSubscriberGathersChunksUpToMaxEventsWithoutSplittingThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(16)
		const maxWait = time.Minute
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 7, MaxBytes: 1 << 30, MaxWait: maxWait, MaxConcurrentWrites: 4})
		out := subscribe(t, s, "logs")
		start := time.Now()
		var chunks [][]*event.Event
		var msgs []*message.Message
		for _, n := range []int{3, 3, 3, 4, 7, 2} {
			evs := events(n, "m")
			chunks = append(chunks, evs)
			msgs = append(msgs, chunk(t, evs...))
		}
		sub.put(t, msgs...)

		want := [][]int{{0, 1}, {2, 3}, {4}} // 3+3 (a third 3 would make 9), 3+4, 7
		for i, w := range want {
			b := take(t, out)
			var ids []uuid.UUID
			var payload []byte
			for _, c := range w {
				ids = append(ids, eventIDs(chunks[c])...)
				payload = append(payload, msgs[c].Payload...)
			}
			if got := batchEvents(t, b); !slices.Equal(got, ids) {
				t.Fatalf("batch %d: events %v, want chunks %v: %v", i, got, w, ids)
			}
			if !bytes.Equal(b.Payload, payload) {
				t.Errorf("batch %d: payload is not its chunks' payloads in order", i)
			}
			if got := b.Metadata.Get(event.MetadataEvents); got != strconv.Itoa(len(ids)) {
				t.Errorf("batch %d: %s = %q, want %d", i, event.MetadataEvents, got, len(ids))
			}
			if got := b.Metadata.Get(event.MetadataFormat); got != event.ChunkFormat {
				t.Errorf("batch %d: %s = %q", i, event.MetadataFormat, got)
			}
			evs, _ := subscribers.Contents(b)
			if b.UUID != event.BatchID(evs).String() {
				t.Errorf("batch %d: uuid %s, want the batch id of its events %s", i, b.UUID, event.BatchID(evs))
			}
			if !time.Now().Equal(start) {
				t.Errorf("batch %d waited %v: a full batch goes out at once", i, time.Since(start))
			}
			b.Ack()
		}
		// The last chunk (2 events) waits for more until MaxWait after it came.
		none(t, out)
		time.Sleep(maxWait - time.Second)
		none(t, out)
		b := <-out
		if waited := time.Since(start); waited != maxWait {
			t.Errorf("the last batch went out after %v, want MaxWait %v", waited, maxWait)
		}
		if got := batchEvents(t, b); !slices.Equal(got, eventIDs(chunks[5])) {
			t.Fatalf("last batch: %v", got)
		}
		b.Ack()
		synctest.Wait()
		if ack, nack := settled(msgs); ack != len(msgs) || nack != 0 {
			t.Errorf("%d chunks acked, %d nacked; want all %d acked", ack, nack, len(msgs))
		}
	})
}

// Port of the old "fills batches and flushes the rest after MaxWait": 250 one-event chunks with
// MaxEvents 100 make two full batches at once and one of 50 after MaxWait.
func TestBatchSubscriberFillsBatchesAndHandsOutTheRestAfterMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(250)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 30, MaxWait: 50 * time.Millisecond, MaxConcurrentWrites: 1})
		out := subscribe(t, s, "logs")
		start := time.Now()
		for range 250 {
			sub.put(t, chunk(t, events(1, "m")...))
		}
		var sizes []int
		var at []time.Duration
		for len(sizes) < 3 {
			b := <-out
			sizes = append(sizes, len(batchEvents(t, b)))
			at = append(at, time.Since(start))
			b.Ack()
		}
		if !slices.Equal(sizes, []int{100, 100, 50}) || at[0] != 0 || at[1] != 0 || at[2] != 50*time.Millisecond {
			t.Fatalf("batches of %v at %v, want 100 and 100 at once, 50 after MaxWait", sizes, at)
		}
		none(t, out)
	})
}

// A batch closes at MaxBytes (of its chunks' payloads); a chunk that would take it over MaxBytes
// opens the next one, and a chunk larger than MaxBytes is a batch of its own (never split).
func TestBatchSubscriberGathersChunksUpToMaxBytes(t *testing.T) {
	for _, c := range []struct {
		name     string
		maxBytes func(one int) int64
		want     []int // batch sizes at once; the rest of the 6 events after MaxWait
	}{
		{"exactly full", func(one int) int64 { return int64(3 * one) }, []int{3, 3}},
		// The last two do not fill a batch: they go out after MaxWait.
		{"the third would overflow", func(one int) int64 { return int64(3*one - 100) }, []int{2, 2}},
		{"a chunk over the bound alone", func(one int) int64 { return int64(one / 2) }, []int{1, 1, 1, 1, 1, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// Every event has this size in the bubble (one time, so one length of ts).
				one := len(chunk(t, events(1, strings.Repeat("x", 1000))...).Payload)
				sub := newFakeSub(16)
				s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: c.maxBytes(one), MaxWait: time.Hour, MaxConcurrentWrites: 10})
				out := subscribe(t, s, "logs")
				start := time.Now()
				for range 6 {
					sub.put(t, chunk(t, events(1, strings.Repeat("x", 1000))...))
				}
				var sizes []int
				for range c.want {
					b := take(t, out) // at once: no MaxWait (an hour) passes
					sizes = append(sizes, len(batchEvents(t, b)))
					b.Ack()
				}
				none(t, out)
				if !slices.Equal(sizes, c.want) || time.Since(start) != 0 {
					t.Fatalf("batches %v after %v, want %v at once", sizes, time.Since(start), c.want)
				}
				if n := 6 - sum(sizes); n > 0 {
					b := <-out
					if got := len(batchEvents(t, b)); got != n || time.Since(start) != time.Hour {
						t.Fatalf("last batch of %d after %v, want the %d left after MaxWait", got, time.Since(start), n)
					}
					b.Ack()
				}
			})
		})
	}
}

func sum(xs []int) (n int) {
	for _, x := range xs {
		n += x
	}
	return n
}

// A chunk with no event (a format this sluice cannot read, or only bad lines) counts by its bytes
// like any other: the chunk after it that would take the batch over MaxBytes opens the next batch.
func TestBatchSubscriberMaxBytesCountsChunksWithoutEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		future := chunk(t, events(3, "m")...)
		future.Metadata.Set(event.MetadataFormat, "ndjson/9")
		next := chunk(t, events(3, "m")...)
		if len(next.Payload) != len(future.Payload) {
			t.Fatal("the two chunks should have the same size")
		}
		sub := newFakeSub(4)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: int64(len(future.Payload) * 3 / 2), MaxWait: time.Hour, MaxConcurrentWrites: 4})
		out := subscribe(t, s, "logs")
		sub.put(t, future, next)
		b := take(t, out)
		if evs, bad := subscribers.Contents(b); len(evs) != 0 || len(bad) != 1 || len(b.Payload) != len(future.Payload) {
			t.Fatalf("first batch: %d events, %d bad lines, %d bytes; want only the unreadable chunk (MaxBytes %d)",
				len(evs), len(bad), len(b.Payload), len(future.Payload)*3/2)
		}
		none(t, out) // the next chunk waits for MaxWait in a batch of its own
		b.Ack()
		b = <-out
		if got := batchEvents(t, b); len(got) != 3 {
			t.Fatalf("second batch of %d events", len(got))
		}
		b.Ack()
	})
}

// MaxConcurrentWrites bounds the batch messages handed out and not yet acked or nacked; beyond them
// the subscription holds one sealed batch and one open batch, and takes no more chunks
// (backpressure onto the wrapped subscriber).
func TestBatchSubscriberBoundsHandedOutBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunks = 10
		sub := newFakeSub(chunks)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 2})
		out := subscribe(t, s, "logs")
		for range chunks {
			sub.put(t, chunk(t, events(1, "m")...))
		}
		var held []*message.Message
		drainOut := func() {
			for {
				synctest.Wait()
				select {
				case b := <-out:
					held = append(held, b)
					continue
				default:
				}
				return
			}
		}
		drainOut()
		if len(held) != 2 {
			t.Fatalf("%d batches handed out unacked, want MaxConcurrentWrites 2", len(held))
		}
		// 2 handed out, 1 sealed waiting, 1 open (full): 4 chunks taken, the rest left to the bus.
		if left := len(sub.ch); left != chunks-4 {
			t.Errorf("the batch subscriber took %d chunks, want 4 (2 handed out, 1 sealed, 1 open)", chunks-left)
		}
		held[0].Ack()
		drainOut()
		if len(held) != 3 {
			t.Fatalf("after one ack %d batches handed out in all, want 3", len(held))
		}
		held[1].Nack() // a nack frees the write as well
		drainOut()
		if len(held) != 4 {
			t.Fatalf("after one nack %d batches handed out in all, want 4", len(held))
		}
		for len(held) < chunks {
			n := len(held)
			held[n-2].Ack() // the two last ones are out
			drainOut()
			if len(held) != n+1 {
				t.Fatalf("after one more ack %d batches handed out in all, want %d", len(held), n+1)
			}
		}
		none(t, out)
	})
}

// Port of the old "bounds concurrent writes", with a Writer as the router's handler (a goroutine per
// message): at most MaxConcurrentWrites sink writes run at once, and exactly that many when the sink
// is slow.
func TestBatchSubscriberBoundsConcurrentWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(8)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 2})
		sink := &recordingSink{gate: make(chan struct{})}
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink})
		out := subscribe(t, s, "logs")
		var wg sync.WaitGroup
		wg.Go(func() { route(out, w) })
		for range 8 {
			sub.put(t, chunk(t, events(1, "m")...))
		}
		synctest.Wait()
		if n := sink.active.Load(); n != 2 {
			t.Fatalf("%d writes wait on the sink, want MaxConcurrentWrites 2", n)
		}
		close(sink.gate)
		synctest.Wait()
		if sizes, total := sink.sizes(); total != 8 || len(sizes) != 8 {
			t.Fatalf("wrote batches %v, want 8 of 1", sizes)
		}
		if m := sink.maxSeen.Load(); m != 2 {
			t.Fatalf("at most %d writes ran at once, want exactly the bound 2", m)
		}
		_ = s.Close()
		wg.Wait()
	})
}

// route does what message.Router does with a handler: a goroutine per message, ack on nil, nack
// on an error. It returns when out closes, once every handler has returned.
func route(out <-chan *message.Message, w *subscribers.Writer) {
	var wg sync.WaitGroup
	for m := range out {
		wg.Go(func() {
			if w.Handle(m) == nil {
				m.Ack()
			} else {
				m.Nack()
			}
		})
	}
	wg.Wait()
}

// Drain hands out the batch held now without waiting for MaxWait, and from then on a batch goes
// out drainWait after its first event (still filling with the chunks that come meanwhile).
func TestBatchSubscriberDrainHandsOutWithoutWaitingForMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(8)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 4})
		out := subscribe(t, s, "logs")
		start := time.Now()
		first := chunk(t, events(2, "m")...)
		sub.put(t, first)
		none(t, out)
		s.Drain()
		b := take(t, out)
		if time.Since(start) != 0 {
			t.Errorf("Drain waited %v", time.Since(start))
		}
		if got := batchEvents(t, b); len(got) != 2 {
			t.Fatalf("drained batch of %d events", len(got))
		}
		b.Ack()
		s.Drain() // twice is harmless

		// Chunks that come while draining still gather, for drainWait at most.
		start = time.Now()
		sub.put(t, chunk(t, events(1, "m")...), chunk(t, events(3, "m")...))
		none(t, out)
		b = <-out
		if waited := time.Since(start); waited != drainWait {
			t.Errorf("a draining subscription handed a batch out after %v, want %v", waited, drainWait)
		}
		if got := batchEvents(t, b); len(got) != 4 {
			t.Fatalf("batch of %d events while draining, want the 4 of both chunks", len(got))
		}
		b.Ack()
		synctest.Wait()
		if !acked(first) {
			t.Error("the drained chunk was not acked")
		}
	})
}

// Drain before Subscribe: the subscription starts eager.
func TestBatchSubscriberDrainBeforeSubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(8)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 4})
		s.Drain()
		out := subscribe(t, s, "logs")
		start := time.Now()
		sub.put(t, chunk(t, events(1, "m")...))
		b := <-out
		if waited := time.Since(start); waited > drainWait {
			t.Errorf("waited %v", waited)
		}
		b.Ack()
	})
}

// With OneChunkPerBatch (a broker's chunks) a nacked batch nacks its one chunk, acks nothing, and is
// not handed out again by the batch subscriber: the broker offers the chunk again.
func TestBatchSubscriberNackOfAOneChunkBatchNacksItsChunk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(16)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1},
			subscribers.OneChunkPerBatch())
		boom := errors.New("storage down")
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: &recordingSink{fail: boom}})
		out := subscribe(t, s, "logs")
		m := chunk(t, events(2, "m")...)
		sub.put(t, m)
		b := take(t, out)
		if err := w.Handle(b); !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		synctest.Wait()
		if acked(m) || nacked(m) {
			t.Fatal("the chunk was settled before its batch message")
		}
		b.Nack()
		synctest.Wait()
		if !nacked(m) || acked(m) {
			t.Fatal("the nacked batch's chunk was not nacked")
		}
		time.Sleep(time.Hour)
		none(t, out)
		if n := s.Redelivered(); n != 0 {
			t.Fatalf("%d batches handed out again, want 0", n)
		}
	})
}

// Ending the subscription nacks the chunks of the batches it holds and of those handed out and not
// settled yet, and closes the batch channel; Close ends every subscription and closes the wrapped
// subscriber, and Subscribe fails after it.
func TestBatchSubscriberEndingTheSubscriptionNacksWhatIsNotWritten(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sub := newFakeSub(16)
			s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 2, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
			ctx, cancel := context.WithCancel(context.Background())
			out, err := s.Subscribe(ctx, "logs")
			if err != nil {
				t.Fatal(err)
			}
			var msgs []*message.Message
			for range 5 {
				msgs = append(msgs, chunk(t, events(1, "m")...))
			}
			sub.put(t, msgs...)
			b := take(t, out) // handed out, never settled
			synctest.Wait()   // 2 handed out, 2 sealed, 1 open
			cancel()
			synctest.Wait()
			if _, ok := <-out; ok {
				t.Fatal("the batch channel is still open")
			}
			if ack, nack := settled(msgs); ack != 0 || nack != 5 {
				t.Fatalf("%d chunks acked, %d nacked; want the 5 nacked", ack, nack)
			}
			b.Ack() // too late: its chunks were offered again already
			synctest.Wait()
			if ack, _ := settled(msgs); ack != 0 {
				t.Fatalf("%d chunks acked after they were nacked", ack)
			}
		})
	})
	t.Run("Close", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sub := newFakeSub(16)
			s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
			out := subscribe(t, s, "logs")
			msgs := []*message.Message{chunk(t, events(1, "m")...), chunk(t, events(1, "m")...)}
			sub.put(t, msgs...)
			none(t, out)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, ok := <-out; ok {
				t.Fatal("the batch channel is still open")
			}
			if ack, nack := settled(msgs); ack != 0 || nack != 2 {
				t.Fatalf("%d chunks acked, %d nacked; want the 2 held nacked", ack, nack)
			}
			if !sub.isClosed() {
				t.Error("Close did not close the wrapped subscriber")
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := s.Subscribe(context.Background(), "logs"); !errors.Is(err, subscribers.ErrSubscriberClosed) {
				t.Errorf("Subscribe after Close: err = %v", err)
			}
		})
	})
	t.Run("wrapped subscription ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sub := newFakeSub(16)
			s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
			out := subscribe(t, s, "logs")
			m := chunk(t, events(1, "m")...)
			sub.put(t, m)
			close(sub.ch)
			synctest.Wait()
			if _, ok := <-out; ok {
				t.Fatal("the batch channel is still open")
			}
			if !nacked(m) {
				t.Fatal("the held chunk was not nacked")
			}
		})
	})
}

// Cut cancels the context of the batch messages handed out: a write waiting on the sink ends with
// context.Canceled, and its chunk is left unsettled, whatever the router does with the batch.
func TestBatchSubscriberCutEndsWritesThatWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(4)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
		sink := &recordingSink{gate: make(chan struct{})} // never opened: a write that waits forever
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink})
		out := subscribe(t, s, "logs")
		m := chunk(t, events(1, "m")...)
		sub.put(t, m)
		b := take(t, out)
		errc := make(chan error, 1)
		go func() { errc <- w.Handle(b) }()
		synctest.Wait()
		if sink.active.Load() != 1 {
			t.Fatal("the write does not wait on the sink")
		}
		if inFlight := s.Cut(time.Second); inFlight != 1 {
			t.Fatalf("Cut: %d events in flight, want 1", inFlight)
		}
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		b.Nack()
		synctest.Wait()
		if nacked(m) || acked(m) {
			t.Fatal("the chunk of the cut write was settled")
		}
	})
}

// Contents decodes a message that does not come from a batch subscriber: the events of its
// context, or its payload; a payload of an unknown format is one bad line.
func TestContentsOfAChunkMessage(t *testing.T) {
	evs := events(2, "m")
	m := chunk(t, evs...)
	got, bad := subscribers.Contents(m)
	if len(bad) != 0 || !slices.Equal(eventIDs(got), eventIDs(evs)) {
		t.Fatalf("decoded %v, %v", eventIDs(got), bad)
	}
	inProcess := message.NewMessage("m", []byte("not decoded"))
	inProcess.SetContext(event.NewContext(context.Background(), evs))
	if got, bad := subscribers.Contents(inProcess); len(bad) != 0 || len(got) != 2 || got[0] != evs[0] {
		t.Fatalf("context events: %v, %v", got, bad)
	}
	future := chunk(t, evs...)
	future.Metadata.Set(event.MetadataFormat, "ndjson/9")
	got, bad = subscribers.Contents(future)
	if len(got) != 0 || len(bad) != 1 || !bytes.Equal(bad[0].Raw, future.Payload) || !strings.Contains(bad[0].Error(), "ndjson/9") {
		t.Fatalf("unknown format: %d events, bad %v", len(got), bad)
	}
}

// Contents decompresses a payload whose format says it is compressed (event.ChunkFormatFor); a payload that
// does not decompress, or that would be too large, is one bad line holding the payload as received.
func TestContentsOfACompressedChunk(t *testing.T) {
	evs := events(3, "m")
	for _, enc := range []string{event.EncodingS2, event.EncodingZstd} {
		m := chunk(t, evs...)
		z, err := event.Compress(nil, m.Payload, enc)
		if err != nil {
			t.Fatal(err)
		}
		m.Payload = z
		m.Metadata.Set(event.MetadataFormat, event.ChunkFormatFor(enc))
		got, bad := subscribers.Contents(m)
		if len(bad) != 0 || !slices.Equal(eventIDs(got), eventIDs(evs)) {
			t.Fatalf("%s: decoded %v, %v", enc, eventIDs(got), bad)
		}
		corrupt := chunk(t, evs...)
		corrupt.Payload = append(bytes.Clone(z[:len(z)/2]), 0xff, 0xfe)
		corrupt.Metadata.Set(event.MetadataFormat, event.ChunkFormatFor(enc))
		got, bad = subscribers.Contents(corrupt)
		if len(got) != 0 || len(bad) != 1 || !bytes.Equal(bad[0].Raw, corrupt.Payload) || !strings.Contains(bad[0].Error(), enc) {
			t.Fatalf("%s, corrupt: %d events, bad %v", enc, len(got), bad)
		}
	}
	unknown := chunk(t, evs...)
	unknown.Metadata.Set(event.MetadataFormat, event.ChunkFormat+"+brotli")
	if got, bad := subscribers.Contents(unknown); len(got) != 0 || len(bad) != 1 || !strings.Contains(bad[0].Error(), "brotli") {
		t.Fatalf("unknown encoding: %d events, bad %v", len(got), bad)
	}
}

// eventually waits (real time, up to waitFor) for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, waitFor)
		}
		time.Sleep(time.Millisecond)
	}
}

// spySub records every message the subscriber it wraps hands out (the bus hands out a new message
// per delivery).
type spySub struct {
	message.Subscriber
	mu  sync.Mutex
	got []*message.Message
}

func (s *spySub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			s.mu.Lock()
			s.got = append(s.got, m)
			s.mu.Unlock()
			select {
			case out <- m:
			case <-ctx.Done():
				m.Nack()
			}
		}
	}()
	return out, nil
}

func (s *spySub) deliveries() []*message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// overBus returns a bounded bus and a batch subscription to its topic "logs" through a spy.
func overBus(t testing.TB, p subscribers.BatchPolicy, opts ...subscribers.BatchOption) (*bus.Bus, *spySub, *subscribers.BatchSubscriber, <-chan *message.Message) {
	t.Helper()
	b, err := bus.New(bus.Config{RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	spy := &spySub{Subscriber: b}
	s := newBatchSubscriber(t, spy, p, opts...)
	return b, spy, s, subscribe(t, s, "logs")
}

// publishChunks publishes n chunks of k events each and returns the events.
func publishChunks(t testing.TB, b *bus.Bus, n, k int) []*event.Event {
	t.Helper()
	var all []*event.Event
	for range n {
		evs := events(k, "m")
		all = append(all, evs...)
		if err := b.Publish("logs", chunk(t, evs...)); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// halfSink stores the first half of the first batch it is given, then either waits for the
// write's context to end or fails (a write killed half-way); later writes store everything.
type halfSink struct {
	fail    error // when set the half-way write fails with it; else it waits on ctx
	halfway chan struct{}
	calls   atomic.Int32
	mu      sync.Mutex
	stored  map[uuid.UUID]int
}

func (s *halfSink) Name() string { return "half" }
func (s *halfSink) Close() error { return nil }

func (s *halfSink) Write(ctx context.Context, b subscribers.Batch) error {
	first := s.calls.Add(1) == 1
	evs := b.Events
	if first {
		evs = evs[:len(evs)/2]
	}
	s.mu.Lock()
	if s.stored == nil {
		s.stored = map[uuid.UUID]int{}
	}
	for _, e := range evs {
		s.stored[e.ID]++
	}
	s.mu.Unlock()
	if !first {
		return nil
	}
	close(s.halfway)
	if s.fail != nil {
		return s.fail
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *halfSink) storedIDs() map[uuid.UUID]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.stored)
}

func sortedIDs(ids []uuid.UUID) []uuid.UUID {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

// A chunk's events are acked only after all of them are written: a write killed half-way (Cut while
// the sink waits, half the events stored) acks no chunk, and the bus counts every event of the batch
// as not handled when it closes, the stored half included: the batch is in flight at the cut.
func TestBatchSubscriberAcksNoChunkOfAWriteKilledHalfWay(t *testing.T) {
	const chunks, perChunk = 4, 5
	b, spy, s, out := overBus(t, subscribers.BatchPolicy{MaxEvents: chunks * perChunk, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
	all := publishChunks(t, b, chunks, perChunk)
	batch := receive(t, out)
	if got := batchEvents(t, batch); !slices.Equal(sortedIDs(got), sortedIDs(eventIDs(all))) {
		t.Fatalf("batch of %d events, want the %d published", len(got), len(all))
	}
	sink := &halfSink{halfway: make(chan struct{})}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink})
	errc := make(chan error, 1)
	go func() { errc <- w.Handle(batch) }()
	select {
	case <-sink.halfway:
	case <-time.After(waitFor):
		t.Fatal("the write did not start")
	}
	if n := len(sink.storedIDs()); n != len(all)/2 {
		t.Fatalf("the sink holds %d events half-way, want %d", n, len(all)/2)
	}
	if inFlight := s.Cut(time.Second); inFlight != len(all) {
		t.Fatalf("Cut: %d events in flight, want the batch's %d", inFlight, len(all))
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	batch.Nack() // what the router does with an error
	if ack, nack := settled(spy.deliveries()); ack != 0 || nack != 0 {
		t.Fatalf("%d chunks acked, %d nacked after the cut; want none settled", ack, nack)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if acked, left := b.AckedEvents("logs"), b.UndeliveredEvents(); acked != 0 || left != int64(len(all)) {
		t.Fatalf("the bus counts %d events acked and %d not handled, want 0 and %d", acked, left, len(all))
	}
}

// A write that fails half-way (the handler returns the error: the router nacks) settles no chunk;
// the same batch (same id, same events) is handed out again, the bus offers none of its chunks
// again, and once the batch is written and acked every chunk is acked: the bus is empty.
func TestBatchSubscriberAcksChunksOnlyOnceTheirBatchIsWritten(t *testing.T) {
	const chunks, perChunk = 4, 5
	b, spy, s, out := overBus(t, subscribers.BatchPolicy{MaxEvents: chunks * perChunk, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1},
		subscribers.RedeliverAfter(time.Millisecond, 5*time.Millisecond))
	all := publishChunks(t, b, chunks, perChunk)
	down := errors.New("connection reset")
	sink := &halfSink{halfway: make(chan struct{}), fail: down}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Observer: obs})

	batch := receive(t, out)
	if err := w.Handle(batch); !errors.Is(err, down) {
		t.Fatalf("err = %v, want %v", err, down)
	}
	batch.Nack()
	again := receive(t, out)
	if again.UUID != batch.UUID {
		t.Fatalf("the batch handed out again has id %s, want %s", again.UUID, batch.UUID)
	}
	if got := batchEvents(t, again); !slices.Equal(sortedIDs(got), sortedIDs(eventIDs(all))) {
		t.Fatalf("the batch handed out again carries %d events, want the same %d", len(got), len(all))
	}
	if st := b.Stats(); st.DepthEvents != int64(len(all)) {
		t.Fatalf("bus depth %d events after a failed write, want all %d", st.DepthEvents, len(all))
	}
	if ack, nack := settled(spy.deliveries()); ack != 0 || nack != 0 {
		t.Fatalf("%d chunks acked, %d nacked after a failed write; want none settled", ack, nack)
	}

	if err := w.Handle(again); err != nil {
		t.Fatal(err)
	}
	if obs.retries() != 0 {
		t.Errorf("the first call for a batch handed out again counted as a retry")
	}
	again.Ack()
	eventually(t, "empty", func() bool { return b.Stats().DepthEvents == 0 })
	if st := b.Stats(); st.DepthMessages != 0 || st.InFlight != 0 || st.Waiting != 0 || st.Redelivered != 0 {
		t.Fatalf("bus stats after the ack: %+v", st)
	}
	if ack, _ := settled(spy.deliveries()); ack != chunks || len(spy.deliveries()) != chunks {
		t.Fatalf("%d of %d deliveries acked, want the %d chunks each delivered once and acked", ack, len(spy.deliveries()), chunks)
	}
	// The count is taken by the batch's watch goroutine, which may run after the handler did.
	eventually(t, "Redelivered() = 1", func() bool { return s.Redelivered() == 1 })
	stored := sink.storedIDs()
	for _, e := range all {
		if stored[e.ID] == 0 {
			t.Fatalf("event %s not stored", e.ID)
		}
	}
}

// A router with the Writer as handler behind Retry, as sluice wires a route: a batch that fails
// twice is written on the third call, counted as two retries, and the bus empties.
func TestBatchSubscriberWithRouterRetriesAndAcks(t *testing.T) {
	b, err := bus.New(bus.Config{RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s := newBatchSubscriber(t, b, subscribers.BatchPolicy{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
	var fails atomic.Int32
	fails.Store(2)
	rec := &recordingSink{}
	obs := &countingObserver{}
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Observer: obs,
		Sink: funcSink(func(ctx context.Context, batch subscribers.Batch) error {
			if fails.Add(-1) >= 0 {
				return errors.New("timeout")
			}
			return rec.Write(ctx, batch)
		})})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: waitFor}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	h := router.AddConsumerHandler("test", "logs", s, w.Handle)
	h.AddMiddleware(middleware.Retry{MaxRetries: 5, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond,
		Multiplier: 1, MaxElapsedTime: time.Minute}.Middleware)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case <-time.After(waitFor):
		t.Fatal("the router did not start")
	}
	all := publishChunks(t, b, 5, 2)
	eventually(t, "empty", func() bool { return b.Stats().DepthEvents == 0 })
	if got := eventIDs(rec.stored()); !slices.Equal(sortedIDs(got), sortedIDs(eventIDs(all))) {
		t.Errorf("stored %d events, want %d", len(got), len(all))
	}
	if n := obs.retries(); n != 2 {
		t.Errorf("%d retries counted, want 2", n)
	}
	if err := router.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The Writer acknowledges a batch's chunks itself once the sink has confirmed the write, before
// Handle returns: nobody acks the batch message here, and the chunks are acked all the same.
func TestWriterAcksTheChunksOfAConfirmedBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(4)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: &recordingSink{}})
		out := subscribe(t, s, "logs")
		chunks := []*message.Message{chunk(t, events(5, "m")...), chunk(t, events(5, "m")...)}
		sub.put(t, chunks...)
		if err := w.Handle(take(t, out)); err != nil {
			t.Fatal(err)
		}
		if ack, nack := settled(chunks); ack != 2 || nack != 0 {
			t.Fatalf("%d chunks acked, %d nacked when Handle returned; want both acked", ack, nack)
		}
	})
}

// Cut settles nothing more: a batch confirmed before it has its chunks acked; a batch whose write
// the sink confirms after it (it stored the events although the write's context had ended) leaves
// its chunks unacked, and the bus counts them as not handled when it closes. Cut returns the events
// of the batches handed out and not settled: those whose writes it cut.
func TestBatchSubscriberCutSettlesNothingMore(t *testing.T) {
	b, _, s, out := overBus(t, subscribers.BatchPolicy{MaxEvents: 4, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 2})
	publishChunks(t, b, 1, 4)
	w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: &recordingSink{}})
	if err := w.Handle(receive(t, out)); err != nil {
		t.Fatal(err)
	}
	publishChunks(t, b, 1, 3)
	s.Drain() // the batch of 3 is handed out without waiting for more
	cutAt, entered := make(chan struct{}), make(chan struct{})
	late := funcSink(func(ctx context.Context, _ subscribers.Batch) error {
		close(entered)
		<-ctx.Done()
		<-cutAt
		return nil // stored all the same, and says so after the cut
	})
	wl := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: late})
	batch := receive(t, out)
	errc := make(chan error, 1)
	go func() { errc <- wl.Handle(batch) }()
	<-entered // the write is under way
	if inFlight := s.Cut(time.Second); inFlight != 3 {
		t.Fatalf("Cut: %d events in flight, want the 3 of the batch being written", inFlight)
	}
	close(cutAt)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	batch.Ack() // what the router does with nil
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := b.AckedEvents("logs"); got != 4 {
		t.Fatalf("%d events acked in the bus, want the 4 written before the cut", got)
	}
	if got := b.UndeliveredEvents(); got != 3 {
		t.Fatalf("%d events undelivered, want the 3 confirmed after the cut", got)
	}
}
