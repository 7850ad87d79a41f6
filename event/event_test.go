package event

import (
	"strings"
	"testing"
	"time"
)

func TestEncodeDecodeRoundTripKeepsRaw(t *testing.T) {
	a := New(LevelWarn, KindHTTP, "GET /x 404")
	a.Status, a.Path, a.Attrs = 404, "/x", map[string]any{"k": "v"}
	b := New(LevelInfo, KindApp, "hello")
	payload, err := Encode(a, b)
	if err != nil {
		t.Fatal(err)
	}
	got, bad := Decode(payload)
	if len(bad) != 0 || len(got) != 2 {
		t.Fatalf("decoded %d events, %d bad", len(got), len(bad))
	}
	if got[0].ID != a.ID || got[0].Status != 404 || got[0].Attrs["k"] != "v" || got[1].Message != "hello" {
		t.Fatalf("round trip lost fields: %+v", got[0])
	}
	if string(got[0].Raw)+"\n"+string(got[1].Raw)+"\n" != string(payload) {
		t.Fatal("Raw is not the line as received")
	}
	again, _ := Encode(got...)
	if string(again) != string(payload) {
		t.Fatal("re-encoding a decoded event must reuse Raw byte for byte")
	}
}

func TestDecodeKeepsGoodLinesAndNamesBadOnes(t *testing.T) {
	good := New(LevelError, KindApp, "ok")
	line, _ := Encode(good)
	payload := "not json\n" + string(line) + `{"id":"00000000-0000-0000-0000-000000000000","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"app","message":""}` + "\n\n"
	got, bad := Decode([]byte(payload))
	if len(got) != 1 || got[0].ID != good.ID {
		t.Fatalf("good events: %d", len(got))
	}
	if len(bad) != 2 || bad[0].Line != 1 || bad[1].Line != 3 || !strings.Contains(bad[1].Error(), "no id") {
		t.Fatalf("bad lines: %v", bad)
	}
}

func TestValidate(t *testing.T) {
	for name, mod := range map[string]func(*Event){
		"no time":       func(e *Event) { e.TS = time.Time{} },
		"unknown level": func(e *Event) { e.Level = "warn" },
		"unknown kind":  func(e *Event) { e.Kind = "db" },
	} {
		e := New(LevelInfo, KindApp, "m")
		mod(e)
		if e.Validate() == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

func TestBatchIDIgnoresOrder(t *testing.T) {
	a, b, c := New(LevelInfo, KindApp, "a"), New(LevelInfo, KindApp, "b"), New(LevelInfo, KindApp, "c")
	if BatchID([]*Event{a, b, c}) != BatchID([]*Event{c, a, b}) {
		t.Fatal("same events in another order gave another id")
	}
	if BatchID([]*Event{a, b}) == BatchID([]*Event{a, c}) {
		t.Fatal("different events gave the same id")
	}
	if v := BatchID([]*Event{a}).Version(); v != 8 {
		t.Fatalf("version %d", v)
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]Level{"debug": LevelDebug, "Info": LevelInfo, "WARNING": LevelWarn, "error": LevelError} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("LOUD"); err == nil || !strings.Contains(err.Error(), "LOUD") {
		t.Errorf("ParseLevel(LOUD) error %v must name the value", err)
	}
}

// A line from elsewhere is made storable when it is decoded: its Raw and its texts.
func TestDecodeMakesLinesStorable(t *testing.T) {
	id := NewID().String()
	line := `{"id":"` + id + `","ts":"2026-01-01T00:00:00Z","level":"ERROR","kind":"app","message":"a\u0000b","attrs":{"n":1e1000000}}`
	got, bad := Decode([]byte(line + "\n"))
	if len(bad) != 0 || len(got) != 1 {
		t.Fatalf("decoded %d events, bad %v", len(got), bad)
	}
	want := `{"id":"` + id + `","ts":"2026-01-01T00:00:00Z","level":"ERROR","kind":"app","message":"a\ufffdb","attrs":{"n":"1e1000000"}}`
	if e := got[0]; string(e.Raw) != want || e.Message != "a\uFFFDb" || e.Attrs["n"] != "1e1000000" {
		t.Errorf("decoded %q, message %q, attrs %v; want Raw %q", e.Raw, e.Message, e.Attrs, want)
	}
	_, bad = Decode([]byte(`{"id":"` + id + `","ts":"2026-01-01T00:00:00Z","level":"ERROR","kind":"app","message":"\x"}` + "\n"))
	if len(bad) != 1 || !strings.Contains(bad[0].Error(), "event line 1: invalid JSON at byte") {
		t.Errorf("a line that is not JSON: %v", bad)
	}
}
