package bus_test

// Benchmarks of the bus side by side with Watermill's GoChannel, in its default configuration and
// with BlockPublishUntilSubscriberAck. The GoChannel cases with a slow or stuck subscriber grow
// with b.N (a goroutine or two per message): run them with a fixed, modest count, e.g.
//
//	go test -run x -bench . -benchmem -benchtime=20000x ./bus/

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/sluicelog/sluice/bus"
)

const (
	benchPayload = 512                   // bytes per message, as in the design brief's GoChannel figures
	busyWork     = 20 * time.Microsecond // CPU a busy subscriber spends on each message
	batchSize    = 100                   // a batching consumer's batch
	batchLinger  = time.Millisecond      // how long it waits to fill a batch (timers here are ~1 ms)
	batchFlush   = 50 * time.Microsecond // CPU that writing a batch costs
)

// spin keeps the CPU busy for d (a sleep would last a timer tick, about 1 ms on these machines).
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

type pubSub struct {
	name string
	new  func(b *testing.B) (message.Publisher, message.Subscriber)
}

func busPubSub(policy bus.FullPolicy) func(b *testing.B) (message.Publisher, message.Subscriber) {
	return func(b *testing.B) (message.Publisher, message.Subscriber) {
		bb, err := bus.New(bus.Config{OnFull: policy}, nil)
		if err != nil {
			b.Fatal(err)
		}
		return bb, bb
	}
}

func goChannel(cfg gochannel.Config) func(b *testing.B) (message.Publisher, message.Subscriber) {
	return func(b *testing.B) (message.Publisher, message.Subscriber) {
		g := gochannel.NewGoChannel(cfg, watermill.NopLogger{})
		return g, g
	}
}

var (
	busDrop    = pubSub{"bus-drop", busPubSub(bus.Drop)}
	busBlock   = pubSub{"bus-block", busPubSub(bus.Block)}
	goChan     = pubSub{"gochannel", goChannel(gochannel.Config{})}
	goChanBack = pubSub{"gochannel-blockack", goChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true})}
)

func closeAll(b *testing.B, pub message.Publisher, sub message.Subscriber) {
	if err := pub.Close(); err != nil {
		b.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublish measures Publish from one publisher with a subscriber that acks at once (idle)
// or spends busyWork of CPU on each message (busy). allocs/op include the subscriber's side. dropped/op is the share of Publish calls the bus
// refused (Drop); the others accept everything, at whatever cost.
func BenchmarkPublish(b *testing.B) {
	for _, load := range []struct {
		name string
		work time.Duration
	}{{"idle", 0}, {"busy", busyWork}} {
		for _, ps := range []pubSub{busDrop, busBlock, goChan, goChanBack} {
			b.Run(load.name+"/"+ps.name, func(b *testing.B) {
				pub, sub := ps.new(b)
				ch, err := sub.Subscribe(context.Background(), "logs")
				if err != nil {
					b.Fatal(err)
				}
				var handled atomic.Int64
				go func() {
					for m := range ch {
						spin(load.work)
						m.Ack()
						handled.Add(1)
					}
				}()
				payload := make([]byte, benchPayload)
				var accepted int64
				b.ReportAllocs()
				for b.Loop() {
					if pub.Publish("logs", message.NewMessage("id", payload)) == nil {
						accepted++
					}
				}
				b.ReportMetric(float64(int64(b.N)-accepted)/float64(b.N), "dropped/op")
				for handled.Load() < accepted {
					time.Sleep(time.Millisecond)
				}
				closeAll(b, pub, sub)
			})
		}
	}
}

// BenchmarkBatchingConsumer measures events/s from one publisher to a consumer that acks in
// batches of batchSize (flushing a partial batch after batchLinger; a flush costs batchFlush). The
// bus publishes with Block, so that every event arrives.
func BenchmarkBatchingConsumer(b *testing.B) {
	for _, ps := range []pubSub{busBlock, goChan, goChanBack} {
		b.Run(ps.name, func(b *testing.B) {
			pub, sub := ps.new(b)
			ch, err := sub.Subscribe(context.Background(), "logs")
			if err != nil {
				b.Fatal(err)
			}
			var handled, batches atomic.Int64
			go func() {
				batch := make([]*message.Message, 0, batchSize)
				linger := time.NewTimer(time.Hour)
				flush := func() {
					spin(batchFlush)
					for _, m := range batch {
						m.Ack()
					}
					handled.Add(int64(len(batch)))
					batches.Add(1)
					batch = batch[:0]
				}
				for {
					select {
					case m, ok := <-ch:
						if !ok {
							return
						}
						if batch = append(batch, m); len(batch) == 1 {
							linger.Reset(batchLinger)
						}
						if len(batch) == batchSize {
							flush()
						}
					case <-linger.C:
						if len(batch) > 0 {
							flush()
						}
					}
				}
			}()
			payload := make([]byte, benchPayload)
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if err := pub.Publish("logs", message.NewMessage("id", payload)); err != nil {
					b.Fatal(err)
				}
			}
			for handled.Load() < int64(b.N) {
				time.Sleep(100 * time.Microsecond)
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/float64(batches.Load()), "events/batch")
			closeAll(b, pub, sub)
		})
	}
}

// BenchmarkStuckSubscriber publishes b.N messages to a topic whose subscriber never reads, and
// reports the peak heap, goroutine stacks and goroutines over the baseline, and how many Publish
// calls returned nil before the publisher finished or stalled (no progress for stallAfter).
func BenchmarkStuckSubscriber(b *testing.B) {
	const stallAfter = 100 * time.Millisecond
	for _, ps := range []pubSub{busDrop, busBlock, goChan, goChanBack} {
		b.Run(ps.name, func(b *testing.B) {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			baseHeap, baseStack, baseG := ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()

			pub, sub := ps.new(b)
			if _, err := sub.Subscribe(context.Background(), "logs"); err != nil {
				b.Fatal(err)
			}
			var progress, accepted atomic.Int64
			done := make(chan struct{})
			payload := make([]byte, benchPayload)
			b.ResetTimer()
			go func() {
				defer close(done)
				for i := 0; i < b.N; i++ {
					if pub.Publish("logs", message.NewMessage("id", payload)) == nil {
						accepted.Add(1)
					}
					progress.Add(1)
				}
			}()

			var peakHeap, peakStack uint64
			var peakG int
			sample := func() {
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapAlloc)
				peakStack = max(peakStack, ms.StackInuse)
				peakG = max(peakG, runtime.NumGoroutine())
			}
			last, lastChange := int64(-1), time.Now()
			for finished := false; !finished; {
				sample()
				select {
				case <-done:
					finished = true
				case <-time.After(5 * time.Millisecond):
				}
				if p := progress.Load(); p != last {
					last, lastChange = p, time.Now()
				} else if time.Since(lastChange) > stallAfter {
					finished = true // stalled: Publish blocks
				}
			}
			sample()
			b.StopTimer()
			mib := func(v, base uint64) float64 { return float64(v-min(v, base)) / (1 << 20) }
			b.ReportMetric(mib(peakHeap, baseHeap), "peak-heap-MiB")
			b.ReportMetric(mib(peakStack, baseStack), "peak-stacks-MiB")
			b.ReportMetric(float64(peakG-baseG), "peak-goroutines")
			b.ReportMetric(float64(accepted.Load()), "accepted")
			closeAll(b, pub, sub) // releases a blocked publisher
			<-done
		})
	}
}

// BenchmarkReserve measures Reserve from parallel goroutines (run with -cpu 1,2,8), as the request
// path calls it once per event, against one topic with one subscription:
//   - accepted: every reservation fits (the bound is out of reach), the success path;
//   - with-unreserve: each reservation is given back at once, so the counters stay small;
//   - refused: the topic is full, every reservation is refused and counted.
func BenchmarkReserve(b *testing.B) {
	for _, bc := range []struct {
		name      string
		maxEvents int
		unreserve bool
		full      bool
	}{
		{"accepted", 1 << 40, false, false},
		{"with-unreserve", 10_000, true, false},
		{"refused", 10_000, false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bb, err := bus.New(bus.Config{MaxEvents: bc.maxEvents, MaxBytes: 1 << 60}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer bb.Close()
			if _, err := bb.Subscribe(context.Background(), "logs"); err != nil {
				b.Fatal(err)
			}
			if bc.full {
				if err := bb.Reserve("logs", int64(bc.maxEvents), 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := bb.Reserve("logs", 1, 200)
					if (err != nil) != bc.full {
						b.Error(err)
						return
					}
					if bc.unreserve {
						bb.Unreserve("logs", 1, 200)
					}
				}
			})
		})
	}
}
