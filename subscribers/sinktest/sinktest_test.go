package sinktest_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// memorySink is the smallest sink that keeps the contract: the suite's check of itself.
type memorySink struct {
	mu      sync.Mutex
	ids     map[uuid.UUID]int
	letters map[string]subscribers.DeadLetter // by route, reason and id or raw
	closed  bool
}

func (m *memorySink) WriteDeadLetters(ctx context.Context, letters []subscribers.DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range letters {
		key := l.Route + "\x00" + l.Reason + "\x00" + l.ID.String()
		if l.ID == uuid.Nil {
			key += "\x00" + string(l.Raw)
		}
		if _, ok := m.letters[key]; !ok {
			m.letters[key] = l
		}
	}
	return nil
}

func (m *memorySink) DeadLetters(context.Context) ([]subscribers.DeadLetter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.letters)), nil
}

func (m *memorySink) Name() string { return "memory" }

func (m *memorySink) Write(ctx context.Context, b subscribers.Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("closed")
	}
	for _, e := range b.Events {
		m.ids[e.ID] = 1
	}
	return nil
}

func (m *memorySink) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memorySink) EventIDs(context.Context) (map[uuid.UUID]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[uuid.UUID]int, len(m.ids))
	for id, n := range m.ids {
		out[id] = n
	}
	return out, nil
}

func TestRunMemorySink(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (subscribers.Sink, sinktest.Reader) {
		m := &memorySink{ids: map[uuid.UUID]int{}, letters: map[string]subscribers.DeadLetter{}}
		return m, m
	})
}

func TestEvents(t *testing.T) {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	events := sinktest.Events(1000, ts)
	ids := map[uuid.UUID]bool{}
	kinds := map[event.Kind]int{}
	size := 0
	for i, e := range events {
		if err := e.Validate(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ids[e.ID] {
			t.Fatalf("event %d: duplicate id %s", i, e.ID)
		}
		ids[e.ID] = true
		if want := ts.Add(time.Duration(i) * time.Millisecond); !e.TS.Equal(want) || e.TS.Location() != time.UTC {
			t.Fatalf("event %d: ts %v, want %v in UTC", i, e.TS, want)
		}
		kinds[e.Kind]++
		b, err := e.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == event.KindHTTP {
			size += len(b)
		}
	}
	if kinds[event.KindHTTP] != 750 || kinds[event.KindApp] != 250 {
		t.Errorf("kinds %v, want 750 http and 250 app", kinds)
	}
	avg := size / kinds[event.KindHTTP]
	t.Logf("HTTP events average %d bytes of JSON", avg)
	if avg < 1000 || avg > 1250 {
		t.Errorf("HTTP events average %d bytes of JSON, want about 1.1 KB", avg)
	}

	again := sinktest.Events(1000, ts)
	for i := range events {
		a, b := *events[i], *again[i]
		a.ID, b.ID = uuid.Nil, uuid.Nil
		ja, _ := a.AppendJSON(nil)
		jb, _ := b.AppendJSON(nil)
		if string(ja) != string(jb) {
			t.Fatalf("event %d differs between calls:\n%s\n%s", i, ja, jb)
		}
	}
}

func TestUnsafeEventEncodes(t *testing.T) {
	e := sinktest.UnsafeEvent(time.Now())
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := event.Encode(e); err != nil {
		t.Fatalf("Encode: %v", err)
	}
}
