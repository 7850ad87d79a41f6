package publishers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/sluicelog/sluice/event"
)

// zeroTimes wraps a handler and notes, record by record, whether the record had no time: sluice stamps
// such a record with the time it handled it (every event needs a time), so the results below leave the
// time out for exactly those records, as slogtest expects of a handler that ignores a zero time.
type zeroTimes struct {
	slog.Handler
	mu    *sync.Mutex
	zeros *[]bool
}

func (z zeroTimes) Handle(ctx context.Context, r slog.Record) error {
	z.mu.Lock()
	*z.zeros = append(*z.zeros, r.Time.IsZero())
	z.mu.Unlock()
	return z.Handler.Handle(ctx, r)
}
func (z zeroTimes) WithAttrs(as []slog.Attr) slog.Handler {
	return zeroTimes{z.Handler.WithAttrs(as), z.mu, z.zeros}
}
func (z zeroTimes) WithGroup(name string) slog.Handler {
	return zeroTimes{z.Handler.WithGroup(name), z.mu, z.zeros}
}

func TestSlogtest(t *testing.T) {
	var (
		rec   *recorder
		mu    sync.Mutex
		zeros []bool
	)
	slogtest.Run(t, func(t *testing.T) slog.Handler {
		rec = &recorder{}
		zeros = nil
		h, err := NewHandler(HandlerOptions{Publisher: rec, AddSource: true})
		if err != nil {
			t.Fatal(err)
		}
		return zeroTimes{h, &mu, &zeros}
	}, func(t *testing.T) map[string]any {
		ev := rec.one(t)
		// The results come from the event's JSON encoding: what the sinks store.
		b, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		var stored struct {
			Level  string         `json:"level"`
			TS     time.Time      `json:"ts"`
			Msg    string         `json:"message"`
			Source string         `json:"source"`
			Attrs  map[string]any `json:"attrs"`
		}
		if err := json.Unmarshal(b, &stored); err != nil {
			t.Fatal(err)
		}
		m := map[string]any{slog.LevelKey: stored.Level, slog.MessageKey: stored.Msg}
		if len(zeros) != 1 || !zeros[0] {
			m[slog.TimeKey] = stored.TS
		}
		if stored.Source != "" {
			m[slog.SourceKey] = stored.Source
		}
		for k, v := range stored.Attrs {
			m[k] = v
		}
		return m
	})
}

func TestHandlerEvents(t *testing.T) {
	rec := &recorder{}
	h, err := NewHandler(HandlerOptions{Publisher: rec, Level: slog.LevelDebug - 4, Service: "svc", AddSource: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ContextWithCorrelation(context.Background(), Correlation{RequestID: "r1", TraceID: "t1", SpanID: "s1"})
	l := slog.New(h).With("app", "x").WithGroup("g")
	levels := []struct {
		level slog.Level
		want  event.Level
	}{
		{slog.LevelDebug - 4, event.LevelDebug}, {slog.LevelDebug, event.LevelDebug}, {slog.LevelInfo - 1, event.LevelDebug},
		{slog.LevelInfo, event.LevelInfo}, {slog.LevelWarn - 1, event.LevelInfo},
		{slog.LevelWarn, event.LevelWarn}, {slog.LevelError - 1, event.LevelWarn},
		{slog.LevelError, event.LevelError}, {slog.LevelError + 4, event.LevelError},
	}
	for _, lv := range levels {
		l.Log(ctx, lv.level, "m\x00sg", "k", 1)
	}
	evs := rec.all()
	if len(evs) != len(levels) {
		t.Fatalf("%d events, want %d", len(evs), len(levels))
	}
	for i, ev := range evs {
		checkSafe(t, ev)
		if ev.Level != levels[i].want {
			t.Errorf("slog level %v became %s, want %s", levels[i].level, ev.Level, levels[i].want)
		}
	}
	ev := evs[0]
	if ev.Kind != event.KindApp || ev.Service != "svc" || ev.RequestID != "r1" || ev.TraceID != "t1" || ev.SpanID != "s1" {
		t.Errorf("event %+v", ev)
	}
	if ev.Message != "m\uFFFDsg" {
		t.Errorf("message %q", ev.Message)
	}
	if !strings.Contains(ev.Source, "handler_test.go:") || !strings.Contains(ev.Source, "TestHandlerEvents") {
		t.Errorf("source %q", ev.Source)
	}
	if ev.Attrs["app"] != "x" || ev.Attrs["g"].(map[string]any)["k"] != int64(1) {
		t.Errorf("attrs %v", ev.Attrs)
	}
}

type marshalsJSON struct{}

func (marshalsJSON) MarshalJSON() ([]byte, error) { return []byte(`{"x":"\u0000\ud800"}`), nil }

type badMarshal struct{}

func (badMarshal) MarshalJSON() ([]byte, error) { return nil, errors.New("no") }

type panicky struct{ p *int }

func (p panicky) MarshalJSON() ([]byte, error) { return []byte(string(rune(*p.p))), nil }

func TestHandlerValues(t *testing.T) {
	rec := &recorder{}
	h, _ := NewHandler(HandlerOptions{Publisher: rec})
	when := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	slog.New(h).Info("values",
		"nan", math.NaN(), "inf", math.Inf(1), "f", 1.5, "u", uint64(7), "b", true,
		"d", 1500*time.Millisecond, "t", when, "err", errors.New("bad\xff"),
		"fn", func() {}, "ch", make(chan int), "nil", nil, "map", map[string]int{"a": 1},
		"marshaler", marshalsJSON{}, "bad", badMarshal{}, "panics", panicky{},
		"bad\xffkey", "v", "bytes", []byte("hi"),
	)
	ev := rec.one(t)
	b, _ := event.Encode(ev)
	var got struct{ Attrs map[string]any }
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"nan": "NaN", "inf": "+Inf", "f": 1.5, "u": 7.0, "b": true, "d": 1.5e9, "t": "2024-05-06T07:08:09.00000001Z",
		"err": "bad\uFFFD", "nil": nil, "map": map[string]any{"a": 1.0}, "marshaler": map[string]any{"x": "\uFFFD\uFFFD"},
		"bad\uFFFDkey": "v", "bytes": "aGk=",
	}
	for k, v := range want {
		gb, _ := json.Marshal(got.Attrs[k])
		wb, _ := json.Marshal(v)
		if !bytes.Equal(gb, wb) {
			t.Errorf("attr %q = %s, want %s", k, gb, wb)
		}
	}
	for _, k := range []string{"fn", "ch", "bad", "panics"} {
		if s, ok := got.Attrs[k].(string); !ok || s == "" {
			t.Errorf("attr %q = %#v, want a string that stands for it", k, got.Attrs[k])
		}
	}
}

func TestHandlerNext(t *testing.T) {
	rec := &recorder{}
	var out bytes.Buffer
	next := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})
	h, _ := NewHandler(HandlerOptions{Publisher: rec, Level: slog.LevelWarn, Next: next})
	l := slog.New(h).With("a", 1).WithGroup("g")
	l.Debug("debug only to next", "k", "v")
	l.Warn("to both", "k", "v")
	if n := len(rec.all()); n != 1 {
		t.Errorf("%d events published, want 1 (WARN only)", n)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"a":1,"g":{"k":"v"}`) {
		t.Errorf("next got:\n%s", out.String())
	}
	if !h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("Enabled must be true when Next takes the level")
	}
}

func TestHandlerDrops(t *testing.T) {
	c := newCounts()
	h, _ := NewHandler(HandlerOptions{Publisher: &recorder{err: reasonError{"queue_full"}}, Counters: c})
	slog.New(h).Info("x")
	h2, _ := NewHandler(HandlerOptions{Publisher: &recorder{}, Counters: c})
	slog.New(h2).Info("x")
	if c.dropped[SourceApp+"/queue_full"] != 1 || c.published[SourceApp] != 1 {
		t.Errorf("dropped %v published %v", c.dropped, c.published)
	}
	if _, err := NewHandler(HandlerOptions{}); !errors.Is(err, ErrNoPublisher) {
		t.Errorf("NewHandler without a Publisher: %v", err)
	}
}
