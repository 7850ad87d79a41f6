package blobsink_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// storeReader reads every blob of a store back: it lists them, gunzips each and decodes its NDJSON.
type storeReader struct {
	store  blobsink.Store
	prefix string
}

func (r storeReader) EventIDs(ctx context.Context) (map[uuid.UUID]int, error) {
	names, err := r.store.List(ctx, r.prefix)
	if err != nil {
		return nil, err
	}
	ids := map[uuid.UUID]int{}
	for _, name := range names {
		data, err := r.store.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		events, err := blobsink.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, e := range events {
			ids[e.ID]++
		}
	}
	return ids, nil
}

func TestConformance(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			sinktest.Run(t, func(t *testing.T) (subscribers.Sink, sinktest.Reader) {
				store := s.open(t)
				sink, err := blobsink.New(store, blobsink.Config{})
				if err != nil {
					t.Fatal(err)
				}
				return sink, storeReader{store: store}
			})
		})
	}
}
