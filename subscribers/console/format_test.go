package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/console"
)

var at = time.Date(2025, 3, 14, 9, 26, 53, 120_000_000, time.UTC)

func id(n int) uuid.UUID {
	return uuid.MustParse("01950000-0000-7000-8000-" + strings.Repeat("0", 12-len(strconv.Itoa(n))) + strconv.Itoa(n))
}

func httpEvent() *event.Event {
	return &event.Event{ID: id(1), TS: at, Level: event.LevelInfo, Kind: event.KindHTTP,
		Message: "GET /api/v1/orders/:id 200", Method: "GET", Route: "/api/v1/orders/:id",
		Path: "/api/v1/orders/1042", Status: 200, DurationMS: 12.5, RequestID: "7d1c2b4e"}
}

func appEvent() *event.Event {
	return &event.Event{ID: id(2), TS: at.Add(time.Millisecond), Level: event.LevelWarn, Kind: event.KindApp,
		Message: "payment provider slow", Source: "internal/orders/service.go:42 orders.(*Service).Process",
		Attrs: map[string]any{
			"attempt":  int64(2),
			"provider": "acme-pay",
			"cache":    map[string]any{"hits": float64(14), "misses": float64(3)},
			"note":     "two words",
			"order_id": float64(1042),
			"ratio":    0.25,
			"empty":    "",
			"ok":       true,
			"missing":  nil,
		}}
}

// lean returns e as an in-process event reaches a sink: encoded into Raw, its nested parts dropped.
func lean(t *testing.T, e *event.Event) *event.Event {
	t.Helper()
	raw, err := e.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Raw = raw
	e.Lean()
	return e
}

// printed writes events as one batch to a new sink with cfg and returns what it printed.
func printed(t *testing.T, cfg console.Config, events ...*event.Event) string {
	t.Helper()
	var buf bytes.Buffer
	s, err := console.NewWriter(&buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(t.Context(), subscribers.NewBatch(events)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestText(t *testing.T) {
	text := console.Config{Format: console.FormatText}
	color := console.Config{Format: console.FormatText, Color: true}
	cases := []struct {
		name string
		cfg  console.Config
		e    func() *event.Event
		want string
	}{
		{"HTTP", text, httpEvent,
			"2025-03-14T09:26:53.120Z INFO  GET /api/v1/orders/1042 200 12.5ms 7d1c2b4e\n"},
		{"HTTPError", text, func() *event.Event {
			e := httpEvent()
			e.Level, e.Method, e.Path, e.Status, e.DurationMS = event.LevelError, "POST", "/upload", 503, 250.1254999
			e.Error = "upstream: context deadline exceeded"
			return e
		}, "2025-03-14T09:26:53.120Z ERROR POST /upload 503 250.125ms 7d1c2b4e error=\"upstream: context deadline exceeded\"\n"},
		{"HTTPFieldsMissing", text, func() *event.Event {
			e := httpEvent()
			e.Method, e.Path, e.Status, e.DurationMS, e.RequestID = "", "", 0, 0, ""
			return e
		}, "2025-03-14T09:26:53.120Z INFO  - - - 0ms\n"},
		{"HTTPPathWithSpace", text, func() *event.Event {
			e := httpEvent()
			e.Path = "/files/my report.pdf"
			return e
		}, "2025-03-14T09:26:53.120Z INFO  GET \"/files/my report.pdf\" 200 12.5ms 7d1c2b4e\n"},
		{"App", text, appEvent,
			"2025-03-14T09:26:53.121Z WARN  payment provider slow attempt=2 cache.hits=14 cache.misses=3 empty=\"\" missing=null " +
				"note=\"two words\" ok=true order_id=1042 provider=acme-pay ratio=0.25\n"},
		{"AppLean", text, func() *event.Event { return lean(t, appEvent()) },
			"2025-03-14T09:26:53.121Z WARN  payment provider slow attempt=2 cache.hits=14 cache.misses=3 empty=\"\" missing=null " +
				"note=\"two words\" ok=true order_id=1042 provider=acme-pay ratio=0.25\n"},
		{"AppLeanBigNumber", text, func() *event.Event {
			e := appEvent()
			e.Attrs = map[string]any{"id": uint64(1<<53 + 1)}
			return lean(t, e)
		}, "2025-03-14T09:26:53.121Z WARN  payment provider slow id=9007199254740993\n"},
		{"AppDebugNoAttrsWithError", text, func() *event.Event {
			e := appEvent()
			e.Level, e.Message, e.Attrs, e.Error = event.LevelDebug, "cache refreshed", nil, "partial: 2 keys"
			return e
		}, "2025-03-14T09:26:53.121Z DEBUG cache refreshed error=\"partial: 2 keys\"\n"},
		{"ColorInfo", color, httpEvent,
			"2025-03-14T09:26:53.120Z \x1b[36mINFO\x1b[0m  GET /api/v1/orders/1042 200 12.5ms 7d1c2b4e\n"},
		{"ColorError", color, func() *event.Event {
			e := appEvent()
			e.Level, e.Attrs = event.LevelError, nil
			return e
		}, "2025-03-14T09:26:53.121Z \x1b[31mERROR\x1b[0m payment provider slow\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := printed(t, c.cfg, c.e()); got != c.want {
				t.Errorf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

// hostile is an event whose every text field tries to forge a line or send terminal escapes.
func hostile() *event.Event {
	const forge = "ok\n2025-03-14T09:26:53.000Z ERROR forged\r\x1b[2J\x1b]0;title\x07\x00\t\x7f\u009b31m\u202egnp.exe\u2028\xff end"
	return &event.Event{ID: id(3), TS: at, Level: "INFO\x1b[31m", Kind: event.KindApp, Message: forge,
		Attrs: map[string]any{"k\n=x": "v\x1b[0m", "q": `say "hi" \o/`, "grp": map[string]any{"\x1b": forge}},
		Error: "bad\nline"}
}

func TestTextEscapesControlCharacters(t *testing.T) {
	const forge = `ok\n2025-03-14T09:26:53.000Z ERROR forged\r\x1b[2J\x1b]0;title\x07\x00\t\x7f\u009b31m\u202egnp.exe\u2028\xff end`
	want := `2025-03-14T09:26:53.120Z INFO\x1b[31m ` + forge + ` "grp.\x1b"="` + forge + `" "k\n=x"="v\x1b[0m" q="say \"hi\" \\o/"` +
		` error="bad\nline"` + "\n"
	for _, color := range []bool{false, true} {
		got := printed(t, console.Config{Format: console.FormatText, Color: color}, hostile())
		if got != want { // an unknown level is not colored
			t.Errorf("color %v:\ngot  %s\nwant %s", color, got, want)
		}
		checkSafeLine(t, got)
	}
	e := hostile()
	e.Kind, e.Method, e.Path, e.RequestID = event.KindHTTP, "GET\r\n", "/\x1b[1A", "id\u0085"
	got := printed(t, console.Config{Format: console.FormatText}, e)
	if want := `2025-03-14T09:26:53.120Z INFO\x1b[31m "GET\r\n" "/\x1b[1A" - 0ms "id\u0085" error="bad\nline"` + "\n"; got != want {
		t.Errorf("HTTP:\ngot  %s\nwant %s", got, want)
	}
	checkSafeLine(t, got)
}

// checkSafeLine fails unless line is one line of valid UTF-8 whose only control character is its final
// newline, with no invisible format character either.
func checkSafeLine(t *testing.T, line string) {
	t.Helper()
	body, ok := strings.CutSuffix(line, "\n")
	if !ok {
		t.Errorf("line %q does not end with a newline", line)
	}
	if !utf8.ValidString(body) {
		t.Errorf("line %q is not valid UTF-8", line)
	}
	for i, r := range body {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			t.Errorf("line %q has %U at byte %d", line, r, i)
		}
	}
}

// Whatever the event's text, the text format prints one safe line.
func FuzzText(f *testing.F) {
	h := hostile()
	f.Add(h.Message, string(h.Level), "k\n=x", "v\x1b[0m", h.Error, "GET\r\n", "/\x1b[1A", "\xc0\xaf")
	f.Add("", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, msg, level, key, value, errText, method, path, reqID string) {
		for _, kind := range []event.Kind{event.KindApp, event.KindHTTP} {
			e := &event.Event{ID: id(4), TS: at, Level: event.Level(level), Kind: kind, Message: msg,
				Attrs: map[string]any{key: value, "g": map[string]any{key: value}}, Error: errText,
				Method: method, Path: path, RequestID: reqID}
			for _, color := range []bool{false, true} {
				line := printed(t, console.Config{Format: console.FormatText, Color: color}, e)
				if color && levelColored(e.Level) { // the one escape a line may hold: its level's color
					line = strings.Replace(line, "\x1b[0m", "", 1)
					line = line[:25] + line[30:]
				}
				checkSafeLine(t, line)
			}
		}
	})
}

func levelColored(l event.Level) bool {
	for _, k := range event.Levels {
		if l == k {
			return true
		}
	}
	return false
}

func TestJSONLineIsTheEventsEncoding(t *testing.T) {
	fromBus := httpEvent()
	fromBus.Raw = []byte(`{"id":"` + fromBus.ID.String() + `","ts":"2025-03-14T09:26:53.12Z","level":"INFO","kind":"http","message":"as received","x":1}`)
	built := appEvent()
	encoded, err := built.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	spread := httpEvent()
	spread.ID = id(9)
	spread.Raw = []byte("{\n  \"id\": \"" + spread.ID.String() + "\",\r\n  \"message\": \"a\\nb\"\n}")

	got := printed(t, console.Config{}, fromBus, built, spread)
	want := string(fromBus.Raw) + "\n" + string(encoded) + "\n" +
		`{"id":"` + spread.ID.String() + `","message":"a\nb"}` + "\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	bad := httpEvent()
	bad.ID = id(8)
	bad.Raw = []byte("{\"message\":\n")
	var buf bytes.Buffer
	s, _ := console.NewWriter(&buf, console.Config{})
	err = s.Write(context.Background(), subscribers.NewBatch([]*event.Event{httpEvent(), bad}))
	if !subscribers.IsPermanent(err) {
		t.Errorf("a raw encoding over two lines that is not JSON: Write = %v, want a permanent error", err)
	}
	if buf.Len() != 0 {
		t.Errorf("a failed batch printed %q", buf.String())
	}
}

type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("boom") }

func TestTextAttributeValues(t *testing.T) {
	deep := map[string]any{"leaf": 1}
	for range 17 {
		deep = map[string]any{"g": deep}
	}
	cases := []struct {
		v    any
		want string
	}{
		{int(-3), "-3"},
		{int32(7), "7"},
		{uint(8), "8"},
		{uint32(9), "9"},
		{uint64(1<<64 - 1), "18446744073709551615"},
		{float32(0.1), "0.1"},
		{1e21, "1e+21"},
		{1e-7, "1e-07"},
		{-0.5, "-0.5"},
		{math.NaN(), "NaN"},
		{math.Inf(-1), "-Inf"},
		{json.Number("12345678901234567890"), "12345678901234567890"},
		{json.RawMessage(`{"a":[1,2]}`), `"{\"a\":[1,2]}"`},
		{time.Date(2025, 3, 14, 9, 0, 0, 5, time.UTC), "2025-03-14T09:00:00.000000005Z"},
		{1500 * time.Millisecond, "1.5s"},
		{errors.New("no route to host"), `"no route to host"`},
		{[]string{"a", "b"}, `"[\"a\",\"b\"]"`},
		{struct{ N int }{4}, `"{\"N\":4}"`},
		{make(chan int), `"!ERROR: json: unsupported type: chan int"`},
		{panicky{}, `"!PANIC: boom"`},
		{deep, `"{\"g\":{\"leaf\":1}}"`},
	}
	for _, c := range cases {
		e := appEvent()
		e.Message, e.Attrs = "m", map[string]any{"v": c.v}
		got := printed(t, console.Config{Format: console.FormatText}, e)
		got = strings.TrimSuffix(strings.TrimPrefix(got, "2025-03-14T09:26:53.121Z WARN  m "), "\n")
		if _, ok := c.v.(map[string]any); ok { // 16 groups flattened, the rest printed as JSON
			c.want = "v" + strings.Repeat(".g", 16) + "=" + c.want
		} else {
			c.want = "v=" + c.want
		}
		if got != c.want {
			t.Errorf("%T %v: got %s, want %s", c.v, c.v, got, c.want)
		}
	}

	e := appEvent()
	e.Message, e.Attrs = "m", nil
	e.Raw = []byte(`{"id":"` + e.ID.String() + `","attrs":{"a":1,}}`) // not JSON: printed as it stands
	if got, want := printed(t, console.Config{Format: console.FormatText}, e),
		`2025-03-14T09:26:53.121Z WARN  m attrs="{\"a\":1,}"`+"\n"; got != want {
		t.Errorf("malformed raw attrs: got %q, want %q", got, want)
	}
}
