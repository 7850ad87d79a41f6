package logquery_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers"
)

// seenEvents records what Follow hands over.
type seenEvents struct {
	mu    sync.Mutex
	count map[string]int
	order []string
}

func (s *seenEvents) add(e *event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count[e.Message]++
	s.order = append(s.order, e.Message)
	return nil
}

// waitFor polls until msg was handed over; the deadline is generous, for a slow machine.
func (s *seenEvents) waitFor(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := s.count[msg]
		s.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("Follow did not hand over %q in 60 s; it handed over %v", msg, s.order)
}

// Follow hands over every new row once, also a row whose transaction began before a poll that saw
// later rows and committed after it (inserted_at is its transaction's start: it commits out of
// order), and only rows that match.
func TestFollowSeesRowsCommittedOutOfOrderOnce(t *testing.T) {
	ctx := context.Background()
	pool, sink := pgSink(t)
	write := func(msg string, level event.Level) {
		e := event.New(level, event.KindApp, msg)
		if err := sink.Write(ctx, subscribers.NewBatch([]*event.Event{e})); err != nil {
			t.Fatal(err)
		}
	}
	write("before", event.LevelError)
	src, err := logquery.NewPostgres(pool, logquery.PostgresConfig{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	seen := &seenEvents{count: map[string]int{}}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Follow(fctx, logquery.Filter{Levels: []event.Level{event.LevelError}}, seen.add) }()
	seen.waitFor(t, "before")

	// A transaction that begins now and commits later.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	late := event.New(event.LevelError, event.KindApp, "committed late")
	if _, err := tx.Exec(ctx, "INSERT INTO application_logs (id, ts, level, kind, message) VALUES ($1, $2, $3, $4, $5)",
		late.ID, late.TS, string(late.Level), string(late.Kind), late.Message); err != nil {
		t.Fatal(err)
	}
	write("committed first", event.LevelError)
	write("not an error", event.LevelInfo)
	seen.waitFor(t, "committed first") // a poll began after the late row's transaction did
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	seen.waitFor(t, "committed late")
	write("last", event.LevelError)
	seen.waitFor(t, "last")
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Follow returned %v, want context.Canceled", err)
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	want := []string{"before", "committed first", "committed late", "last"}
	if len(seen.order) != len(want) {
		t.Fatalf("handed over %v, want each of %v once", seen.order, want)
	}
	for i, m := range want {
		if seen.order[i] != m {
			t.Errorf("handed over %v, want %v", seen.order, want)
			break
		}
	}
}
