package closing

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// Close calls each part once, in the order added, then the broker's own closes, and joins every error.
func TestCloseClosesEachPartOnceInOrder(t *testing.T) {
	var s Set
	var calls []string
	closer := func(name string, err error) func() error {
		return func() error { calls = append(calls, name); return err }
	}
	errA, errPub := errors.New("a failed"), errors.New("publisher failed")
	if !s.Add(closer("a", errA)) || !s.Add(closer("b", nil)) {
		t.Fatal("Add refused a part of an open set")
	}
	err := s.Close(closer("publisher", errPub), closer("connection", nil))
	if want := []string{"a", "b", "publisher", "connection"}; !slices.Equal(calls, want) {
		t.Fatalf("Close called %v, want %v", calls, want)
	}
	if !errors.Is(err, errA) || !errors.Is(err, errPub) {
		t.Fatalf("Close = %v, want both errors joined", err)
	}
	if err := s.Close(closer("publisher", errPub)); err != nil || len(calls) != 4 {
		t.Fatalf("second Close = %v after %v, want nil and nothing called", err, calls)
	}
	if s.Add(closer("late", nil)) {
		t.Fatal("Add kept a part after Close")
	}
	if len(calls) != 4 {
		t.Fatalf("calls %v: the part added late was called", calls)
	}
}

func TestCloseOfAnEmptySet(t *testing.T) {
	var s Set
	if err := s.Close(); err != nil {
		t.Fatalf("Close of an empty set = %v", err)
	}
}

// A part is either added before Close takes the parts, and closed, or refused: never lost.
func TestAddRacingClose(t *testing.T) {
	for range 100 {
		var s Set
		var mu sync.Mutex
		closed := map[int]bool{}
		kept := make([]bool, 8)
		var wg sync.WaitGroup
		for i := range kept {
			wg.Go(func() {
				kept[i] = s.Add(func() error { mu.Lock(); closed[i] = true; mu.Unlock(); return nil })
			})
		}
		wg.Go(func() { _ = s.Close() })
		wg.Wait()
		for i, k := range kept {
			if k != closed[i] {
				t.Fatalf("part %d: kept %v, closed %v", i, k, closed[i])
			}
		}
	}
}

func ExampleSet() {
	var parts Set
	parts.Add(func() error { fmt.Println("subscriber 1 closed"); return nil })
	parts.Add(func() error { fmt.Println("subscriber 2 closed"); return nil })
	err := parts.Close(func() error { fmt.Println("connection closed"); return nil })
	fmt.Println(err, parts.Add(func() error { return nil }))
	// Output:
	// subscriber 1 closed
	// subscriber 2 closed
	// connection closed
	// <nil> false
}
