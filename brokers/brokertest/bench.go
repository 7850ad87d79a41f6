package brokertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/event"
)

// BenchEvents is the number of events in each chunk the benchmark sends: a full chunk of a web
// node's forwarding (bus.forward.chunk.max_events).
const BenchEvents = 1000

// Bench measures a broker with full chunks: "publish" publishes b.N of them from 4 goroutines (as a
// web node forwards), "consume" takes b.N published ones through one subscription and acks each.
// Both report events/s and MB/s. open must reach the same broker on every call.
func Bench(b *testing.B, open func(testing.TB) brokers.Broker) {
	chunk := Chunk(BenchEvents)
	report := func(b *testing.B, elapsed time.Duration) {
		b.ReportMetric(float64(b.N*BenchEvents)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(b.N*len(chunk.Payload))/elapsed.Seconds()/1e6, "MB/s")
	}
	copyOf := func() *message.Message {
		m := chunk.Copy()
		m.UUID = event.NewID().String()
		return m
	}
	b.Run("publish", func(b *testing.B) {
		br := open(b)
		topic, g := Names(b, "a")
		if err := br.Declare(context.Background(), topic, g); err != nil {
			b.Fatal(err)
		}
		work := make(chan struct{})
		var wg sync.WaitGroup
		start := time.Now()
		for range 4 {
			wg.Go(func() {
				for range work {
					if err := br.Publisher().Publish(topic, copyOf()); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for range b.N {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		report(b, time.Since(start))
	})
	b.Run("consume", func(b *testing.B) {
		br := open(b)
		topic, g := Names(b, "a")
		if err := br.Declare(context.Background(), topic, g); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			if err := br.Publisher().Publish(topic, copyOf()); err != nil {
				b.Fatal(err)
			}
		}
		s, err := br.Subscriber(g[0])
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ResetTimer()
		start := time.Now()
		ch, err := s.Subscribe(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			select {
			case m := <-ch:
				m.Ack()
			case <-time.After(time.Minute):
				b.Fatal("no message within a minute")
			}
		}
		report(b, time.Since(start))
	})
}
