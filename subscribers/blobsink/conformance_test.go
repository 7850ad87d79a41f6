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
// Dead-letter blobs are not events: EventIDs skips them, DeadLetters reads them.
type storeReader struct {
	store  blobsink.Store
	prefix string
}

func (r storeReader) EventIDs(ctx context.Context) (map[uuid.UUID]int, error) {
	events, err := readAll(ctx, r.store, r.prefix, func(name string) bool { return !blobsink.IsDeadLetter(name) },
		blobsink.Decode)
	ids := map[uuid.UUID]int{}
	for _, e := range events {
		ids[e.ID]++
	}
	return ids, err
}

func (r storeReader) DeadLetters(ctx context.Context) ([]subscribers.DeadLetter, error) {
	return readAll(ctx, r.store, blobsink.DeadLetterPrefix, blobsink.IsDeadLetter, blobsink.DecodeDeadLetters)
}

// readAll decodes every blob whose name starts with prefix and passes keep.
func readAll[T any](ctx context.Context, store blobsink.Store, prefix string, keep func(string) bool,
	decode func([]byte) ([]T, error)) ([]T, error) {
	names, err := store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, name := range names {
		if !keep(name) {
			continue
		}
		data, err := store.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		items, err := decode(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, items...)
	}
	return out, nil
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
