// Package sinktest is the one conformance suite that every sluice sink passes (PostgreSQL, Blob, local
// directory), after Watermill's pubsub/tests: a sink's own test calls Run with a Factory that builds the
// sink over a fresh, empty store and a Reader of that store. It also generates the realistic events
// that the suite, the sinks' own tests and their benchmarks write.
//
// The suite checks the subscribers.Sink contract through what is stored, never through a sink's
// internals. This package is for tests and benchmarks only; it must not import a sink package.
package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// Reader reads back what a sink stored.
type Reader interface {
	// EventIDs returns, for every event id in the store, the number of stored copies of that event.
	EventIDs(ctx context.Context) (map[uuid.UUID]int, error)
}

// DeadLetterReader reads back the dead letters a sink stored. A Reader implements it when its sink is a
// subscribers.DeadLetterSink; the suite's dead-letter case then checks what was stored, letter by
// letter.
type DeadLetterReader interface {
	// DeadLetters returns every dead letter in the store, each stored copy once.
	DeadLetters(ctx context.Context) ([]subscribers.DeadLetter, error)
}

// Factory returns a sink writing to a fresh, empty store that nothing else writes to, and a Reader of
// that store. It is called once per test case; it registers with t.Cleanup whatever it must release
// besides the sink, which the suite closes itself.
type Factory func(t *testing.T) (subscribers.Sink, Reader)

// Run runs the conformance suite against the sinks that f makes, one subtest per property.
func Run(t *testing.T, f Factory) {
	cases := []struct {
		name         string
		run          func(t *testing.T, s subscribers.Sink, r Reader)
		closesItself bool
	}{
		{"StoresEachEventOnce", testStoresEachEventOnce, false},
		{"SameBatchTwice", testSameBatchTwice, false},
		{"DuplicateEventInBatch", testDuplicateEventInBatch, false},
		{"UnsafeText", testUnsafeText, false},
		{"ConcurrentWrites", testConcurrentWrites, false},
		{"CancelledContext", testCancelledContext, false},
		{"HourBoundary", testHourBoundary, false},
		{"EmptyBatch", testEmptyBatch, false},
		{"LargeEvent", testLargeEvent, false},
		{"WriteAfterClose", testWriteAfterClose, true},
		{"DeadLetters", testDeadLetters, false},
		{"Stored", testStored, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, r := f(t)
			if s.Name() == "" {
				t.Error("Name() is empty")
			}
			if !c.closesItself {
				t.Cleanup(func() {
					if err := s.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				})
			}
			c.run(t, s, r)
		})
	}
}

// timeout bounds each case's calls to the sink and the reader.
const timeout = time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// baseTime is the time of the suite's events: fixed, so that names derived from it are predictable.
var baseTime = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func write(t *testing.T, ctx context.Context, s subscribers.Sink, events []*event.Event) {
	t.Helper()
	b := subscribers.NewBatch(events)
	if err := s.Write(ctx, b); err != nil {
		t.Fatalf("Write(batch %s of %d events): %v", b.ID, len(events), err)
	}
}

// expectStored checks that the store holds exactly the given events, one copy each.
func expectStored(t *testing.T, ctx context.Context, r Reader, events ...[]*event.Event) {
	t.Helper()
	got, err := r.EventIDs(ctx)
	if err != nil {
		t.Fatalf("EventIDs: %v", err)
	}
	want := map[uuid.UUID]bool{}
	for _, es := range events {
		for _, e := range es {
			want[e.ID] = true
		}
	}
	var problems []string
	for id := range want {
		switch n := got[id]; n {
		case 1:
		case 0:
			problems = append(problems, fmt.Sprintf("event %s not stored", id))
		default:
			problems = append(problems, fmt.Sprintf("event %s stored %d times", id, n))
		}
	}
	for id, n := range got {
		if !want[id] {
			problems = append(problems, fmt.Sprintf("unexpected event %s stored %d times", id, n))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("... and %d more", len(problems)-10))
		}
		t.Fatalf("store holds %d event ids, want %d:\n%s", len(got), len(want), strings.Join(problems, "\n"))
	}
}

func testStoresEachEventOnce(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(500, baseTime)
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

// A redelivered or retried batch must not store its events again.
func testSameBatchTwice(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(200, baseTime)
	write(t, ctx, s, events)
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

// An at-least-once bus can deliver an event twice into the same batch.
func testDuplicateEventInBatch(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(50, baseTime)
	withDup := append(append([]*event.Event{}, events...), events[0], events[49], events[7])
	write(t, ctx, s, withDup)
	expectStored(t, ctx, r, events)
}

// One event full of what stores refuse (NUL, invalid UTF-8, \u0000 escapes) must not fail its batch.
func testUnsafeText(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(20, baseTime)
	events[10] = UnsafeEvent(baseTime.Add(10 * time.Millisecond))
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

func testConcurrentWrites(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	const writers, perBatch = 8, 100
	batches := make([][]*event.Event, writers)
	for i := range batches {
		batches[i] = Events(perBatch, baseTime.Add(time.Duration(i)*time.Second))
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i, events := range batches {
		wg.Go(func() { errs[i] = s.Write(ctx, subscribers.NewBatch(events)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Write: %v", err)
	}
	expectStored(t, ctx, r, batches...)
}

// A write whose context is already cancelled fails; it leaves the sink usable.
func testCancelledContext(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(100, baseTime)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Write(cancelled, subscribers.NewBatch(events)); err == nil {
		t.Fatal("Write with a cancelled context returned nil")
	}
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

// Stores that partition by hour (blob names) must store both sides of the boundary.
func testHourBoundary(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	before := time.Date(2025, 3, 14, 10, 59, 59, 900_000_000, time.UTC)
	after := time.Date(2025, 3, 14, 11, 0, 0, 100_000_000, time.UTC)
	events := append(Events(3, before), Events(3, after)...)
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

// A sink that is a subscribers.Verifier says a written batch is stored (across an hour boundary too)
// and one never written is not.
func testStored(t *testing.T, s subscribers.Sink, _ Reader) {
	v, ok := s.(subscribers.Verifier)
	if !ok {
		t.Skip("not a subscribers.Verifier")
	}
	ctx := testContext(t)
	before := time.Date(2025, 3, 14, 10, 59, 59, 900_000_000, time.UTC)
	written := subscribers.NewBatch(append(Events(3, before), Events(3, before.Add(time.Second))...))
	if err := s.Write(ctx, written); err != nil {
		t.Fatal(err)
	}
	never := subscribers.NewBatch(Events(2, before))
	for _, c := range []struct {
		b    subscribers.Batch
		want bool
	}{{written, true}, {never, false}} {
		if got, err := v.Stored(ctx, c.b); err != nil || got != c.want {
			t.Errorf("Stored(batch %s) = %v, %v; want %v", c.b.ID, got, err, c.want)
		}
	}
}

func testEmptyBatch(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	if err := s.Write(ctx, subscribers.NewBatch(nil)); err != nil {
		t.Fatalf("Write(empty batch): %v", err)
	}
	if err := s.Write(ctx, subscribers.Batch{}); err != nil {
		t.Fatalf("Write(zero Batch): %v", err)
	}
	expectStored(t, ctx, r)
}

func testLargeEvent(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	events := Events(10, baseTime)
	large := events[0]
	text := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	large.Response.Body = &event.Body{ContentType: "text/plain", Size: int64(len(text)), Text: text}
	write(t, ctx, s, events)
	expectStored(t, ctx, r, events)
}

func testWriteAfterClose(t *testing.T, s subscribers.Sink, r Reader) {
	ctx := testContext(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Write(ctx, subscribers.NewBatch(Events(5, baseTime))); err == nil {
		t.Fatal("Write after Close returned nil")
	}
}

// UnsafeEvent returns an HTTP event at ts that carries what stores refuse as text: NUL bytes and
// invalid UTF-8 in its message, a header name and value, the request body text and an attribute key
// and value, and a \u0000 escape and a lone surrogate escape in the response's JSON body (a real escape,
// next to an escaped backslash followed by u0000, which is plain text).
func UnsafeEvent(ts time.Time) *event.Event {
	const bad = "a\x00b\xff\xfec"
	e := newEvent(event.LevelError, event.KindHTTP, "boom "+bad, ts)
	e.RequestID = "req-" + bad
	e.Method, e.Route, e.Path, e.Status = "POST", "/upload", "/upload/\x00\xc3", 500
	e.UserAgent = "agent\x00\xc0\xaf"
	e.Request = &event.Message{
		Query:   "q=" + bad,
		Headers: map[string][]string{"X-Bad" + bad: {"v" + bad}},
		Body:    &event.Body{ContentType: "text/plain", Size: 9, Text: "body " + bad},
	}
	e.Response = &event.Message{
		Body: &event.Body{ContentType: "application/json", Size: 60,
			JSON: json.RawMessage(`{"nul":"x\u0000y","lone":"\ud800","plain":"\\u0000","ok":"\ud83d\ude00"}`)},
	}
	e.Error = "failed: " + bad
	e.Attrs = map[string]any{"key" + bad: "value " + bad, "nested": map[string]any{"n": "\x00"}}
	return e
}
