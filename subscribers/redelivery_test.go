package subscribers_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// A nacked batch is handed out again as the same batch: the same id and events in a new message,
// its redelivery delay after each nack (doubling, up to the maximum), its chunks settled by nobody
// meanwhile; a chunk that comes meanwhile goes to a batch of its own. Once the batch is written its
// chunks are acked.
func TestBatchSubscriberHandsANackedBatchOutAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub := newFakeSub(16)
		s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Minute, MaxConcurrentWrites: 2},
			subscribers.RedeliverAfter(time.Second, 3*time.Second))
		down := errors.New("storage down")
		sink := &recordingSink{fail: down}
		obs := &countingObserver{}
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, Observer: obs})
		out := subscribe(t, s, "logs")
		var chunks []*message.Message
		for range 5 {
			chunks = append(chunks, chunk(t, events(2, "m")...))
		}
		sub.put(t, chunks...)
		first := take(t, out) // full: 10 events
		want := sortedIDs(batchEvents(t, first))
		late := events(1, "late")

		msg := first
		for i, delay := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
			if err := w.Handle(msg); !errors.Is(err, down) {
				t.Fatalf("nack %d: err = %v, want %v", i+1, err, down)
			}
			msg.Nack()
			if i == 0 {
				sub.put(t, chunk(t, late...)) // comes while the batch waits
			}
			time.Sleep(delay - time.Millisecond)
			none(t, out)
			time.Sleep(time.Millisecond)
			again := take(t, out)
			if again == msg || again.UUID != first.UUID {
				t.Fatalf("nack %d: handed out again as message %p id %s, want a new message with id %s", i+1, again, again.UUID, first.UUID)
			}
			if got := sortedIDs(batchEvents(t, again)); !slices.Equal(got, want) {
				t.Fatalf("nack %d: handed out again with %d events, want the same %d", i+1, len(got), len(want))
			}
			if ack, nack := settled(chunks); ack != 0 || nack != 0 {
				t.Fatalf("nack %d: %d chunks acked, %d nacked; want none settled", i+1, ack, nack)
			}
			msg = again
		}
		synctest.Wait()
		if n := s.Redelivered(); n != 4 {
			t.Fatalf("Redelivered() = %d, want 4", n)
		}

		sink.mu.Lock()
		sink.fail = nil
		sink.mu.Unlock()
		if err := w.Handle(msg); err != nil {
			t.Fatal(err)
		}
		msg.Ack()
		synctest.Wait()
		if ack, nack := settled(chunks); ack != len(chunks) || nack != 0 {
			t.Fatalf("%d chunks acked, %d nacked once the batch is written; want all %d acked", ack, nack, len(chunks))
		}
		if n := obs.retries(); n != 0 {
			t.Errorf("%d retries counted: the first call for each message of the batch is not a retry", n)
		}
		time.Sleep(time.Minute) // the late chunk's batch: MaxWait
		if got := batchEvents(t, take(t, out)); !slices.Equal(got, eventIDs(late)) {
			t.Fatalf("the late chunk's batch has %d events, want its own 1", len(got))
		}
	})
}

// redelivering returns a fake subscriber and a subscription of a batch subscriber over it that seals a
// batch at maxEvents (or after an hour), writes one at a time, and hands a nacked batch out again
// after delay, doubling up to maxDelay.
func redelivering(t *testing.T, maxEvents int, delay, maxDelay time.Duration) (*fakeSub, *subscribers.BatchSubscriber, <-chan *message.Message) {
	t.Helper()
	sub := newFakeSub(8)
	s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: maxEvents, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1},
		subscribers.RedeliverAfter(delay, maxDelay))
	return sub, s, subscribe(t, s, "logs")
}

// failedWrite takes the next batch, has w fail to write it, nacks it (as the router does) and returns
// it.
func failedWrite(t *testing.T, w *subscribers.Writer, out <-chan *message.Message) *message.Message {
	t.Helper()
	b := take(t, out)
	if err := w.Handle(b); err == nil {
		t.Fatal("the write did not fail")
	}
	b.Nack()
	return b
}

// A nacked batch holds no write while it waits: the sealed batch goes out at once. When the nacked
// one is due and a write is free, it goes before the batch sealed meanwhile.
func TestBatchSubscriberNackedBatchWaitsWithoutAWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub, _, out := redelivering(t, 1, time.Second, time.Second)
		c1, c2, c3 := events(1, "1"), events(1, "2"), events(1, "3")
		sub.put(t, chunk(t, c1...), chunk(t, c2...), chunk(t, c3...))
		b1 := take(t, out)
		b1.Nack()
		b2 := take(t, out)
		if got := batchEvents(t, b2); !slices.Equal(got, eventIDs(c2)) {
			t.Fatal("the sealed batch did not go out while the nacked one waits")
		}
		time.Sleep(time.Second) // b1 is due, but the one write is b2's
		none(t, out)
		b2.Ack()
		again := take(t, out)
		if again.UUID != b1.UUID {
			t.Fatalf("after the write is freed batch %s went out, want the nacked %s before the sealed one", again.UUID, b1.UUID)
		}
		again.Ack()
		if got := batchEvents(t, take(t, out)); !slices.Equal(got, eventIDs(c3)) {
			t.Fatal("the last batch is not the third chunk's")
		}
	})
}

// Once Drain is called a nacked batch waits drainWait at most: the one waiting already, and one
// nacked while draining, whatever its redelivery delay.
func TestBatchSubscriberDrainShortensTheWaitOfANackedBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub, s, out := redelivering(t, 1, time.Minute, time.Hour)
		m := chunk(t, events(1, "m")...)
		sub.put(t, m)
		b := take(t, out)
		b.Nack()
		time.Sleep(time.Second)
		none(t, out)
		s.Drain()
		drained := time.Now()
		again := <-out
		if waited := time.Since(drained); waited != drainWait {
			t.Errorf("a waiting batch went out %v after Drain, want %v", waited, drainWait)
		}
		again.Nack()
		nackedAt := time.Now()
		last := <-out
		if waited := time.Since(nackedAt); waited != drainWait {
			t.Errorf("a batch nacked while draining went out %v after its nack, want %v", waited, drainWait)
		}
		if last.UUID != b.UUID {
			t.Fatalf("handed out batch %s, want %s", last.UUID, b.UUID)
		}
		last.Ack()
		synctest.Wait()
		if !acked(m) {
			t.Fatal("the chunk was not acked")
		}
	})
}

// The end of the subscription nacks the chunks of a batch waiting to be handed out again: Close,
// its context, or the wrapped subscription ending.
func TestBatchSubscriberEndingTheSubscriptionNacksAWaitingBatch(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(s *subscribers.BatchSubscriber, sub *fakeSub, cancel context.CancelFunc)
	}{
		{"Close", func(s *subscribers.BatchSubscriber, _ *fakeSub, _ context.CancelFunc) { _ = s.Close() }},
		{"context", func(_ *subscribers.BatchSubscriber, _ *fakeSub, cancel context.CancelFunc) { cancel() }},
		{"wrapped subscription ends", func(_ *subscribers.BatchSubscriber, sub *fakeSub, _ context.CancelFunc) { close(sub.ch) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sub := newFakeSub(4)
				s := newBatchSubscriber(t, sub, subscribers.BatchPolicy{MaxEvents: 2, MaxBytes: 1 << 20, MaxWait: time.Hour, MaxConcurrentWrites: 1})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				out, err := s.Subscribe(ctx, "logs")
				if err != nil {
					t.Fatal(err)
				}
				chunks := []*message.Message{chunk(t, events(1, "m")...), chunk(t, events(1, "m")...)}
				sub.put(t, chunks...)
				take(t, out).Nack()
				synctest.Wait()
				if ack, nack := settled(chunks); ack != 0 || nack != 0 {
					t.Fatalf("%d chunks acked, %d nacked while their batch waits", ack, nack)
				}
				c.end(s, sub, cancel)
				synctest.Wait()
				if _, ok := <-out; ok {
					t.Fatal("the batch channel is still open")
				}
				if ack, nack := settled(chunks); ack != 0 || nack != len(chunks) {
					t.Fatalf("%d chunks acked, %d nacked; want the %d of the waiting batch nacked", ack, nack, len(chunks))
				}
			})
		})
	}
}

// Cut counts a batch waiting to be handed out again in flight (its failed write may have stored its
// events), without waiting for it, and it is not handed out again after the cut: its chunks stay
// unsettled.
func TestBatchSubscriberCutCountsAWaitingBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub, s, out := redelivering(t, 3, time.Second, time.Second)
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: &recordingSink{fail: errors.New("gave up")}})
		m := chunk(t, events(3, "m")...)
		sub.put(t, m)
		failedWrite(t, w, out)
		synctest.Wait()
		start := time.Now()
		if inFlight := s.Cut(time.Hour); inFlight != 3 {
			t.Fatalf("Cut: %d events in flight, want the 3 of the waiting batch", inFlight)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Cut waited %v for a batch whose write had ended", waited)
		}
		time.Sleep(time.Minute)
		none(t, out)
		_ = s.Close()
		if acked(m) || nacked(m) {
			t.Fatal("the chunk of a batch waiting at the cut was settled")
		}
	})
}

// The dead letters of a batch are kept once, not again when the batch is handed out again.
func TestWriterKeepsTheDeadLettersOfABatchHandedOutAgainOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sub, _, out := redelivering(t, 2, time.Second, time.Second)
		box := &letterBox{}
		var fails int
		sink := funcSink(func(context.Context, subscribers.Batch) error {
			if fails++; fails == 1 {
				return errors.New("gave up")
			}
			return nil
		})
		w := newWriter(t, subscribers.WriterConfig{Route: "test", Sink: sink, DeadLetters: box})
		sub.put(t, rawChunk("not an event\n", 1), chunk(t, events(2, "m")...))
		failedWrite(t, w, out)
		time.Sleep(time.Second)
		again := take(t, out)
		if err := w.Handle(again); err != nil {
			t.Fatal(err)
		}
		if got := box.byReason()[subscribers.ReasonDecodeError]; got != 1 {
			t.Fatalf("%d dead letters kept for the one bad line, want 1", got)
		}
	})
}

func TestRedeliverAfterRejectsBadDelays(t *testing.T) {
	p := subscribers.BatchPolicy{MaxEvents: 1, MaxBytes: 1, MaxWait: 1, MaxConcurrentWrites: 1}
	for _, c := range []struct {
		delay, max time.Duration
		want       []string
	}{
		{0, time.Second, []string{"redelivery_delay", "0s", "positive"}},
		{2 * time.Second, time.Second, []string{"max_redelivery_delay", "1s", "redelivery_delay (2s)"}},
	} {
		_, err := subscribers.NewBatchSubscriber(newFakeSub(0), p, subscribers.RedeliverAfter(c.delay, c.max))
		if err == nil || !contains(err.Error(), append(c.want, "invalid config")...) {
			t.Errorf("RedeliverAfter(%v, %v): err = %v, want one naming %q", c.delay, c.max, err, c.want)
		}
	}
	if _, err := subscribers.NewBatchSubscriber(newFakeSub(0), p, subscribers.RedeliverAfter(time.Second, time.Second)); err != nil {
		t.Errorf("equal delays: %v", err)
	}
}

// flakyStore is the archive's local-directory store whose first Put of a name that fail matches
// fails: after storing the object when stored is set (a store that completed a write whose client
// gave up), else without. The first Put of all waits for gate.
type flakyStore struct {
	*blobsink.DirStore
	fail    func(name string) bool
	stored  bool
	started chan struct{} // closed when the first Put begins
	gate    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	failed  bool
}

func (s *flakyStore) Put(ctx context.Context, name string, data []byte, contentType, contentEncoding string) error {
	s.once.Do(func() {
		close(s.started)
		<-s.gate
	})
	s.mu.Lock()
	fail := !s.failed && s.fail(name)
	s.failed = s.failed || fail
	s.mu.Unlock()
	if !fail {
		return s.DirStore.Put(ctx, name, data, contentType, contentEncoding)
	}
	if s.stored {
		if err := s.DirStore.Put(ctx, name, data, contentType, contentEncoding); err != nil {
			return err
		}
	}
	return errors.New("flaky store: connection reset")
}

// The archive holds every event once when a failed batch write stored some or all of its events all
// the same, and another chunk came while it was written. The batch is written again as the same
// batch, whose blobs have the same names: before, its chunks went back to the bus and came back
// gathered with the other chunk, as a batch of another id, whose blobs were second copies. Real time:
// the memory bus, the blob sink on a local directory, a Writer as the router's handler.
func TestArchiveHoldsEachEventOnceAfterAFailedWriteThatStored(t *testing.T) {
	hour := time.Date(2025, 1, 2, 15, 59, 59, 0, time.UTC)
	for _, c := range []struct {
		name   string
		times  []time.Time // of the first chunk's events
		fail   func(name string) bool
		stored bool
	}{
		{"the store completed a write whose client gave up",
			[]time.Time{hour, hour, hour}, func(string) bool { return true }, true},
		{"one hour of the batch stored, the other failed",
			[]time.Time{hour, hour, hour.Add(time.Second)}, func(name string) bool { return strings.HasPrefix(name, "2025/01/02/16/") }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds, err := blobsink.NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			store := &flakyStore{DirStore: ds, fail: c.fail, stored: c.stored, started: make(chan struct{}), gate: make(chan struct{})}
			sink, err := blobsink.New(store, blobsink.Config{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := bus.New(bus.Config{RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			s := newBatchSubscriber(t, b, subscribers.BatchPolicy{MaxEvents: 1000, MaxBytes: 1 << 20, MaxWait: 500 * time.Millisecond, MaxConcurrentWrites: 1})
			w := newWriter(t, subscribers.WriterConfig{Route: "archive", Sink: sink})
			out := subscribe(t, s, "logs")
			var wg sync.WaitGroup
			wg.Go(func() { route(out, w) })

			first := events(len(c.times), "first")
			for i, ts := range c.times {
				first[i].TS = ts
			}
			if err := b.Publish("logs", chunk(t, first...)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-store.started: // the first chunk's batch is being written
			case <-time.After(waitFor):
				t.Fatal("the first batch's write did not start")
			}
			second := events(2, "second")
			for _, e := range second {
				e.TS = hour
			}
			if err := b.Publish("logs", chunk(t, second...)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the second chunk taken", func() bool { return b.Stats().InFlight == 2 })
			close(store.gate) // the first write fails now, and its batch is nacked
			eventually(t, "every chunk acked", func() bool { return b.Stats().DepthEvents == 0 })
			_ = s.Close()
			wg.Wait()

			copies := map[uuid.UUID]int{}
			names, err := ds.List(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				data, err := ds.Get(context.Background(), name)
				if err != nil {
					t.Fatal(err)
				}
				evs, err := blobsink.Decode(data)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					copies[e.ID]++
				}
			}
			for _, e := range append(first, second...) {
				if n := copies[e.ID]; n != 1 {
					t.Errorf("event %q %s is in the archive %d times, want once (blobs %v)", e.Message, e.ID, n, names)
				}
			}
			if len(copies) != len(first)+len(second) {
				t.Errorf("the archive holds %d events, want %d", len(copies), len(first)+len(second))
			}
		})
	}
}
