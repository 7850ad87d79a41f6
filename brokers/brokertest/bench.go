package brokertest

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/event"
)

// BenchEvents is the events of each chunk Bench sends: a web node's default chunk
// (bus.forward.chunk.max_events).
const BenchEvents = 1000

// Bench measures a broker with b.N chunks of BenchEvents small events: first publishing them, 4
// publishes at once (a web node's default bus.forward.max_concurrent_publishes), then consuming them
// with one subscription that acks each. It reports the events per second of each phase
// (published-events/s, consumed-events/s), which are figures for the capacity model, never asserted.
func Bench(b *testing.B, open func(b *testing.B) brokers.Broker) {
	br := open(b)
	topic, g := Names(b, "bench")
	declare(b, br, topic, g)
	payload := Chunk(BenchEvents).Payload // the same bytes in each chunk: the broker does not look
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = message.NewMessage(event.NewID().String(), payload)
		msgs[i].Metadata.Set(event.MetadataEvents, strconv.Itoa(BenchEvents))
		msgs[i].Metadata.Set(event.MetadataFormat, event.ChunkFormat)
	}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(msgs)); i = next.Add(1) - 1 {
				if err := br.Publisher().Publish(topic, msgs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	start = time.Now()
	receive(b, subscribe(b, br, g[0], topic), b.N, true, 10*time.Minute)
	consumed := time.Since(start)
	b.StopTimer()
	events := float64(b.N * BenchEvents)
	b.ReportMetric(events/published.Seconds(), "published-events/s")
	b.ReportMetric(events/consumed.Seconds(), "consumed-events/s")
}
