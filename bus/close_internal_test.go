package bus

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// A Close that finds another one under way returns only once that one has ended every subscription
// and counted what was left: the caller reads final counts, whichever Close returns first. (A router
// closes the bus through each handler's subscriber while the pipeline closes it too.)
func TestConcurrentCloseWaitsForTheCounts(t *testing.T) {
	b, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := b.Subscribe(context.Background(), "logs")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("logs", message.NewMessage("m", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	<-ch // handed out, never acked
	var sub *subscription
	b.mu.Lock()
	for s := range b.subs {
		sub = s
	}
	b.mu.Unlock()

	sub.mu.Lock() // the subscription cannot finish until this is released
	first := make(chan struct{})
	go func() { _ = b.Close(); close(first) }()
	for !b.closed.Load() {
		time.Sleep(time.Millisecond)
	}
	second := make(chan struct{})
	go func() { _ = b.Close(); close(second) }()
	select {
	case <-second:
		t.Fatalf("the second Close returned while the first was still ending the subscription (undelivered %d)", b.Undelivered())
	case <-time.After(50 * time.Millisecond):
	}
	sub.mu.Unlock()
	<-first
	<-second
	if got := b.Undelivered(); got != 1 {
		t.Fatalf("undelivered %d, want 1", got)
	}
}
