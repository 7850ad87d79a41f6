package sluice

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
)

// An event over capture.max_event_bytes loses its bodies' content first, then its headers, then its
// attributes, each marked; only an event still over the limit without them is dropped (too_large).
func TestEventOverTheMaximumSizeIsShrunkThenDropped(t *testing.T) {
	sink := &fakeSink{}
	p := testPipeline(t, sink, func(c *Config) {
		c.Capture.MaxEventBytes = 8 << 10
		c.Routes[0].Chunk.Linger = time.Millisecond
		c.Routes[0].Batch.MaxWait = 10 * time.Millisecond
	})
	big := strings.Repeat("x", 6<<10)
	bodies := event.New(event.LevelWarn, event.KindHTTP, "POST /a 400")
	bodies.Request = &event.Message{Headers: map[string][]string{"A": {"1"}}, Body: &event.Body{Size: 6 << 10, Text: big}}
	bodies.Response = &event.Message{Body: &event.Body{Size: 6 << 10, Text: big}}
	headers := event.New(event.LevelWarn, event.KindHTTP, "GET /b 400")
	headers.Request = &event.Message{Headers: map[string][]string{"A": {big}, "B": {big, big}}}
	attrs := event.New(event.LevelInfo, event.KindApp, "m")
	attrs.Attrs = map[string]any{"a": big, "b": big}
	for _, e := range []*event.Event{bodies, headers, attrs} {
		if err := p.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	hopeless := event.New(event.LevelInfo, event.KindApp, strings.Repeat("m", 9<<10))
	var drop *DropError
	if err := p.Publish(context.Background(), hopeless); !errors.As(err, &drop) || drop.Reason() != bus.ReasonTooLarge {
		t.Fatalf("an event over the limit without bodies, headers and attributes: %v, want a too_large drop", err)
	}
	waitFor(t, "3 events written", func() bool { _, stored := sink.snapshot(); return len(stored) == 3 })
	calls, _ := sink.snapshot()
	seen := 0
	for _, b := range calls {
		for _, e := range b.Events {
			seen++
			if len(e.Raw) > 8<<10 {
				t.Errorf("%s: %d bytes stored, over the 8 KiB limit", e.Message, len(e.Raw))
			}
			s := string(e.Raw)
			switch e.Message {
			case "POST /a 400":
				if strings.Count(s, `"omitted":"event_size"`) != 2 || !strings.Contains(s, `"headers":{"A":["1"]}`) {
					t.Errorf("bodies: %s", s)
				}
			case "GET /b 400":
				if !strings.Contains(s, `"headers_dropped":3`) {
					t.Errorf("headers: %s", s)
				}
			case "m":
				if !strings.Contains(s, `"attrs":{"sluice_attrs_dropped":2}`) {
					t.Errorf("attrs: %s", s)
				}
			}
		}
	}
	if seen != 3 {
		t.Errorf("%d events written, want 3", seen)
	}
}
