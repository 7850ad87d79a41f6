package delivery

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// broker is a Source over a queue of messages keyed 0, 1, 2…, recording what it is told.
type broker struct {
	mu                      sync.Mutex
	queue                   []int
	acked, nacked, released []int
	touched                 [][]int
	fetches                 int
	maxFetch                int
}

func (b *broker) Fetch(ctx context.Context, n int) ([]Item[int], error) {
	b.mu.Lock()
	b.fetches++
	b.maxFetch = max(b.maxFetch, n)
	k := min(n, len(b.queue))
	keys := b.queue[:k]
	b.queue = b.queue[k:]
	b.mu.Unlock()
	if k == 0 {
		time.Sleep(time.Second)
	}
	var items []Item[int]
	for _, key := range keys {
		items = append(items, Item[int]{Key: key, Msg: message.NewMessage(watermill.NewUUID(), nil)})
	}
	return items, nil
}

func (b *broker) record(to *[]int, ks ...int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	*to = append(*to, ks...)
	return nil
}

func (b *broker) Ack(_ context.Context, k int) error  { return b.record(&b.acked, k) }
func (b *broker) Nack(_ context.Context, k int) error { return b.record(&b.nacked, k) }
func (b *broker) Release(_ context.Context, ks []int) error {
	return b.record(&b.released, ks...)
}
func (b *broker) Touch(_ context.Context, ks []int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	slices.Sort(ks)
	b.touched = append(b.touched, ks)
	return nil
}

func (b *broker) snapshot() (acked, nacked, released []int, touched [][]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.acked), slices.Clone(b.nacked), slices.Sorted(slices.Values(b.released)), slices.Clone(b.touched)
}

// At most MaxInFlight messages are out unsettled; an ack and a nack reach the broker and free a
// slot; the messages held are touched every heartbeat; at the end what is held is released.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &broker{queue: []int{0, 1, 2, 3, 4, 5}}
		out := make(chan *message.Message)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			Run(ctx, b, out, Options{MaxInFlight: 3, Heartbeat: 5 * time.Second, Logger: watermill.NopLogger{}})
			close(done)
		}()
		var got []*message.Message
		for range 3 {
			got = append(got, <-out)
		}
		synctest.Wait()
		select {
		case <-out:
			t.Fatal("a fourth message was handed out while three were unsettled")
		default:
		}
		got[0].Ack()
		got[1].Nack()
		got = append(got, <-out, <-out) // keys 3 and 4: two slots were freed
		synctest.Wait()
		acked, nacked, _, _ := b.snapshot()
		if !slices.Equal(acked, []int{0}) || !slices.Equal(nacked, []int{1}) {
			t.Fatalf("acked %v and nacked %v, want [0] and [1]", acked, nacked)
		}
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		if _, _, _, touched := b.snapshot(); len(touched) != 1 || !slices.Equal(touched[0], []int{2, 3, 4}) {
			t.Fatalf("touched %v after one heartbeat, want [[2 3 4]]", touched)
		}
		got[4].Ack()
		cancel()
		<-done
		if _, ok := <-out; ok {
			t.Fatal("out is open after Run returned")
		}
		acked, _, released, _ := b.snapshot()
		if !slices.Equal(acked, []int{0, 4}) || !slices.Equal(released, []int{2, 3}) {
			t.Fatalf("acked %v and released %v at the end, want [0 4] and [2 3]", acked, released)
		}
		if b.maxFetch > 3 {
			t.Errorf("fetched up to %d at once, want at most MaxInFlight 3", b.maxFetch)
		}
	})
}

// Messages fetched but not handed out when the subscription ends are released too.
func TestRunReleasesWhatItFetchedAtTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &broker{queue: []int{0, 1, 2}}
		out := make(chan *message.Message)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			Run(ctx, b, out, Options{MaxInFlight: 8, Heartbeat: time.Second, Logger: watermill.NopLogger{}})
			close(done)
		}()
		(<-out).Ack()
		synctest.Wait() // 1 and 2 fetched, 1 waiting to be handed out
		cancel()
		<-done
		acked, _, released, _ := b.snapshot()
		if !slices.Equal(acked, []int{0}) || !slices.Equal(released, []int{1, 2}) {
			t.Fatalf("acked %v and released %v, want [0] and [1 2]", acked, released)
		}
	})
}
