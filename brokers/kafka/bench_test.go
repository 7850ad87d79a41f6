package kafka_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/brokers/brokertest"
	"github.com/sluicelog/sluice/brokers/kafka"
	"github.com/sluicelog/sluice/internal/testenv"
)

// benchChunk is a chunk of about 64 KiB of events, as a web node forwards them.
var benchChunk = sync.OnceValue(func() *message.Message { return brokertest.Chunk(560) })

// benchBrokers are the driver (with its defaults) and the stock watermill-kafka set-up, against one
// kfake. Run them with, for example,
//
//	go test -run '^$' -bench . -benchtime 2000x ./brokers/kafka/
func benchBrokers(b *testing.B) map[string]func(*testing.B) brokers.Broker {
	k := testenv.Kafka(b, testenv.KafkaOptions{Partitions: 6, AutoCreateTopics: true})
	return map[string]func(*testing.B) brokers.Broker{
		"driver": func(b *testing.B) brokers.Broker {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			br, err := kafka.Open(ctx, k.Addr(), kafka.DefaultSettings(), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = br.Close() })
			return br
		},
		"stock": func(b *testing.B) brokers.Broker { return stockBroker(b, k.Addr()) },
	}
}

// publishAll publishes n copies of the chunk (new UUIDs), 4 publishes at once as a web node does.
func publishAll(b *testing.B, br brokers.Broker, topic string, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				m := benchChunk().Copy()
				m.UUID = strconv.FormatInt(i, 10) + "-" + m.UUID
				if err := br.Publisher().Publish(topic, m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkPublish64KiBChunks: chunks/s a web node's 4 concurrent publishes get acknowledged.
func BenchmarkPublish64KiBChunks(b *testing.B) {
	for name, open := range benchBrokers(b) {
		b.Run(name, func(b *testing.B) {
			br := open(b)
			topic, _ := brokertest.Names(b)
			if err := br.Declare(context.Background(), topic, nil); err != nil {
				b.Fatal(err)
			}
			publishAll(b, br, topic, 10) // the topic exists and the connections are up
			b.SetBytes(int64(len(benchChunk().Payload)))
			b.ResetTimer()
			publishAll(b, br, topic, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// BenchmarkConsume64KiBChunks: chunks/s one group member receives, when it acks each chunk at once
// (ack), and when it gathers up to 16 chunks (or what came within 50 ms) into a write of 20 ms and
// then acks them (batch20ms), as a worker writing sink batches does.
func BenchmarkConsume64KiBChunks(b *testing.B) {
	for name, open := range benchBrokers(b) {
		for _, mode := range []string{"ack", "batch20ms"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				br := open(b)
				topic, g := brokertest.Names(b, "bench")
				if err := br.Declare(context.Background(), topic, g); err != nil {
					b.Fatal(err)
				}
				publishAll(b, br, topic, b.N)
				s, err := br.Subscriber(g[0])
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(benchChunk().Payload)))
				b.ResetTimer()
				ch, err := s.Subscribe(b.Context(), topic)
				if err != nil {
					b.Fatal(err)
				}
				consume(b, ch, b.N, mode == "batch20ms")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
			})
		}
	}
}

func consume(b *testing.B, ch <-chan *message.Message, n int, batched bool) {
	seen := map[string]bool{}
	var batch []*message.Message
	flush := func() {
		if len(batch) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		for _, m := range batch {
			m.Ack()
		}
		batch = batch[:0]
	}
	deadline := time.After(time.Minute)
	for len(seen) < n {
		select {
		case m := <-ch:
			seen[m.UUID] = true
			if !batched {
				m.Ack()
				continue
			}
			batch = append(batch, m)
			if len(batch) == 16 {
				flush()
			}
		case <-time.After(50 * time.Millisecond):
			flush()
		case <-deadline:
			b.Fatalf("received %d of %d chunks", len(seen), n)
		}
	}
	flush()
}
