package event

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestNewIDIsAnIncreasingUUIDv7OfTS(t *testing.T) {
	const n = 3000 // more than one buffer of random bytes
	prev := uuid.Nil
	seen := make(map[uuid.UUID]bool, n)
	for range n {
		e := New(LevelInfo, KindApp, "m")
		id := e.ID
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("%s: version %d, variant %v", id, id.Version(), id.Variant())
		}
		if ms := time.Unix(id.Time().UnixTime()).UnixMilli(); ms != e.TS.UnixMilli() {
			// The counter may carry into the next millisecond when ids come faster than one per 256 ns.
			if d := ms - e.TS.UnixMilli(); d < 0 || d > 1 {
				t.Fatalf("%s holds millisecond %d, TS %d", id, ms, e.TS.UnixMilli())
			}
		}
		if bytes.Compare(id[:], prev[:]) <= 0 {
			t.Fatalf("%s does not sort after %s", id, prev)
		}
		if seen[id] {
			t.Fatalf("%s made twice", id)
		}
		seen[id], prev = true, id
	}
}

func TestNewIDConcurrentIDsAreDistinct(t *testing.T) {
	const workers, each = 4, 1000
	var mu sync.Mutex
	seen := make(map[uuid.UUID]bool, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			ids := make([]uuid.UUID, each)
			for i := range ids {
				ids[i] = New(LevelInfo, KindApp, "").ID
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] {
					t.Errorf("%s made twice", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}

func TestNewIDRandomBitsVary(t *testing.T) {
	a, b := New(LevelInfo, KindApp, "").ID, New(LevelInfo, KindApp, "").ID
	if bytes.Equal(a[9:], b[9:]) {
		t.Fatalf("%s and %s share their random bits", a, b)
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		New(LevelInfo, KindHTTP, "")
	}
}
