package publishers

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/sluicelog/sluice/event"
)

// recorder is a fake Publisher that keeps what it is given (or refuses it with err).
type recorder struct {
	mu     sync.Mutex
	events []*event.Event
	err    error
}

func (r *recorder) Publish(_ context.Context, e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) all() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.events...)
}

// one returns the only event published, failing the test when there is not exactly one.
func (r *recorder) one(t testing.TB) *event.Event {
	t.Helper()
	evs := r.all()
	if len(evs) != 1 {
		t.Fatalf("published %d events, want 1", len(evs))
	}
	checkSafe(t, evs[0])
	return evs[0]
}

// counts is a Counters that keeps its counts in maps.
type counts struct {
	mu        sync.Mutex
	published map[string]int
	dropped   map[string]int // "source/reason"
	sampled   map[string]int
}

func newCounts() *counts {
	return &counts{published: map[string]int{}, dropped: map[string]int{}, sampled: map[string]int{}}
}

func (c *counts) Published(source string) { c.mu.Lock(); c.published[source]++; c.mu.Unlock() }
func (c *counts) Dropped(source, reason string) {
	c.mu.Lock()
	c.dropped[source+"/"+reason]++
	c.mu.Unlock()
}
func (c *counts) SampledOut(route string) { c.mu.Lock(); c.sampled[route]++; c.mu.Unlock() }

// newEcho returns an Echo with the outer middlewares, then sluice configured by cfg (its Publisher set
// to a new recorder when nil), then the routes.
func newEcho(t testing.TB, cfg Config, routes func(e *echo.Echo), outer ...echo.MiddlewareFunc) (*echo.Echo, *recorder) {
	t.Helper()
	rec, _ := cfg.Publisher.(*recorder)
	if cfg.Publisher == nil {
		rec = &recorder{}
		cfg.Publisher = rec
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(outer...)
	mw, err := cfg.ToMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	e.Use(mw)
	routes(e)
	return e, rec
}

func serve(e *echo.Echo, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.ServeHTTP(w, req)
	return w
}

// checkSafe fails unless the event encodes as JSON that PostgreSQL takes: valid UTF-8, no NUL, no \u0000.
func checkSafe(t testing.TB, e *event.Event) {
	t.Helper()
	b, err := event.Encode(e)
	if err != nil {
		t.Fatalf("event does not encode: %v", err)
	}
	if !storableJSON(b) {
		t.Fatalf("event encoding is not storable JSON: %q", b)
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
}

// storableJSON reports whether b is JSON that SafeJSON (whose own fuzz test checks what it writes
// against an oracle of its own) has nothing to change in: valid, and storable text.
func storableJSON(b []byte) bool {
	out, err := event.SafeJSON(b, nil)
	return err == nil && bytes.Equal(out, b)
}

// newChunkedBody returns a pipe that yields s in pieces of n bytes (an unknown-length, chunked request
// body) and the function that writes them.
func newChunkedBody(s string, n int) (*io.PipeReader, func()) {
	pr, pw := io.Pipe()
	return pr, func() {
		for len(s) > 0 {
			k := min(n, len(s))
			if _, err := pw.Write([]byte(s[:k])); err != nil {
				return
			}
			s = s[k:]
		}
		pw.Close()
	}
}
