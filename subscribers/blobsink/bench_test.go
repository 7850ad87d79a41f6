package blobsink_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// BenchmarkWrite compares the sink's batches (1000 events a blob, one Write at a time) with one blob per
// event (the design this replaces: 8 uploads at a time), on the same realistic events, for Azurite and
// a local directory. Each iteration writes 1000 events with fresh ids. Compare events/s.
//
//	eval "$(scripts/azurite.sh start)"
//	go test -run '^$' -bench Write -benchtime 20x ./subscribers/blobsink/
func BenchmarkWrite(b *testing.B) {
	const perIteration = 1000
	for _, s := range stores {
		b.Run(s.name+"/batch1000", func(b *testing.B) {
			sink := newSink(b, s.open(b), blobsink.Config{})
			events := sinktest.Events(perIteration, time.Now())
			ctx := context.Background()
			for b.Loop() {
				freshIDs(events)
				if err := sink.Write(ctx, subscribers.NewBatch(events)); err != nil {
					b.Fatal(err)
				}
			}
			reportEventsPerSecond(b, perIteration)
		})
		b.Run(s.name+"/blob-per-event", func(b *testing.B) {
			sink := newSink(b, s.open(b), blobsink.Config{})
			events := sinktest.Events(perIteration, time.Now())
			ctx := context.Background()
			const uploaders = 8
			for b.Loop() {
				freshIDs(events)
				next := make(chan *event.Event)
				var wg sync.WaitGroup
				for range uploaders {
					wg.Go(func() {
						for e := range next {
							if err := sink.Write(ctx, subscribers.NewBatch([]*event.Event{e})); err != nil {
								b.Error(err)
							}
						}
					})
				}
				for _, e := range events {
					next <- e
				}
				close(next)
				wg.Wait()
			}
			reportEventsPerSecond(b, perIteration)
		})
	}
}

func freshIDs(events []*event.Event) {
	for _, e := range events {
		e.ID = uuid.New()
	}
}

func reportEventsPerSecond(b *testing.B, perIteration int) {
	b.ReportMetric(float64(b.N*perIteration)/b.Elapsed().Seconds(), "events/s")
}
