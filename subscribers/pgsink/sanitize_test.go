package pgsink

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/sluicelog/sluice/event"
)

func TestCleanText(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"clean", "GET /hello 200", "GET /hello 200"},
		{"empty", "", ""},
		{"non-ASCII", "héllo, 世界 😀", "héllo, 世界 😀"},
		{"NUL", "a\x00b", "a\uFFFDb"},
		{"only NULs", "\x00\x00", "\uFFFD\uFFFD"},
		{"invalid byte", "a\xffb", "a\uFFFDb"},
		{"invalid run", "a\xff\xfe\xfdb", "a\uFFFD\uFFFD\uFFFDb"}, // one per byte, as everywhere (event.SafeString)
		{"truncated sequence", "caf\xc3", "caf\uFFFD"},
		{"overlong slash", "\xc0\xaf", "\uFFFD\uFFFD"},
		{"surrogate in UTF-8", "\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"NUL and invalid", "a\x00b\xff\xfec", "a\uFFFDb\uFFFD\uFFFDc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := cleanText(c.in); got != c.want {
				t.Errorf("cleanText(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func TestCleanJSON(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"no escapes", `{"a":"b"}`, `{"a":"b"}`},
		{"harmless escapes", `{"a":"x\"y\\z\n\u00e9\u2028"}`, `{"a":"x\"y\\z\n\u00e9\u2028"}`},
		{"NUL escape", `{"a":"x\u0000y"}`, `{"a":"x` + "\uFFFD" + `y"}`},
		{"NUL escape in key", `{"\u0000":1}`, `{"` + "\uFFFD" + `":1}`},
		{"NUL escape at end", `"\u0000"`, `"` + "\uFFFD" + `"`},
		{"escaped backslash then u0000", `{"a":"\\u0000"}`, `{"a":"\\u0000"}`},
		{"escaped backslash then real escape", `{"a":"\\\u0000"}`, `{"a":"\\` + "\uFFFD" + `"}`},
		{"two escaped backslashes then u0000", `"\\\\u0000"`, `"\\\\u0000"`},
		{"upper-case hex", `"\u0000\U0000"`, `"` + "\uFFFD" + `\U0000"`},
		{"surrogate pair", `"\ud83d\ude00"`, `"\ud83d\ude00"`},
		{"upper-case surrogate pair", `"\uD83D\uDE00"`, `"\uD83D\uDE00"`},
		{"lone high surrogate", `"\ud800"`, `"` + "\uFFFD" + `"`},
		{"lone high surrogate then text", `"\ud800abcdef"`, `"` + "\uFFFD" + `abcdef"`},
		{"high surrogate then non-surrogate escape", `"\ud800\u0041"`, `"` + "\uFFFD" + `\u0041"`},
		{"two high surrogates", `"\ud800\ud83d\ude00"`, `"` + "\uFFFD" + `\ud83d\ude00"`},
		{"lone low surrogate", `"\ude00"`, `"` + "\uFFFD" + `"`},
		{"invalid UTF-8", "{\"a\":\"x\xffy\"}", "{\"a\":\"x\uFFFDy\"}"},
		{"invalid UTF-8 and NUL escape", "[\"\xff\",\"\\u0000\"]", "[\"\uFFFD\",\"\uFFFD\"]"},
		{"short escape at end", `"\u00`, `"\u00`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(cleanJSON([]byte(c.in))); got != c.want {
				t.Errorf("cleanJSON(%s)\n got %s\nwant %s", c.in, got, c.want)
			}
		})
	}
}

func TestCleanJSONKeepsCleanInput(t *testing.T) {
	in := []byte(`{"a":"\n\u00e9"}`)
	if out := cleanJSON(in); &out[0] != &in[0] {
		t.Error("cleanJSON copied a document that needed no change")
	}
}

func TestJSONMessage(t *testing.T) {
	for _, c := range []struct {
		name string
		in   *event.Message
		want string // "" for NULL
	}{
		{"nil", nil, ""},
		{"JSON body", &event.Message{Body: &event.Body{Size: 7, JSON: json.RawMessage(`{"a": 1}`)}},
			`{"body":{"size":7,"json":{"a":1}}}`},
		{"invalid JSON body kept as text", &event.Message{Body: &event.Body{Size: 7, JSON: json.RawMessage(`{"a":`)}},
			`{"body":{"size":7,"text":"{\"a\":"}}`},
		{"NUL in header and body", &event.Message{
			Headers: map[string][]string{"X\x00": {"v\x00"}},
			Body:    &event.Body{Size: 1, Text: "\x00\xff"},
		}, `{"headers":{"X` + "\uFFFD" + `":["v` + "\uFFFD" + `"]},"body":{"size":1,"text":"` + "\uFFFD" + `\ufffd"}}`}, // encoding/json escapes invalid UTF-8
		{"NUL escape in JSON body", &event.Message{Body: &event.Body{Size: 1, JSON: json.RawMessage(`"\u0000"`)}},
			`{"body":{"size":1,"json":"` + "\uFFFD" + `"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := jsonMessage(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want || (got == nil) != (c.want == "") {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestJSONAttrs(t *testing.T) {
	for _, c := range []struct {
		name string
		in   map[string]any
		want string // "" for NULL
	}{
		{"none", nil, ""},
		{"empty", map[string]any{}, ""},
		{"plain", map[string]any{"a": 1, "b": "x"}, `{"a":1,"b":"x"}`},
		{"NaN kept as text", map[string]any{"a": math.NaN(), "b": 2}, `{"a":"NaN","b":2}`},
		{"channel kept as text", map[string]any{"c": make(chan int)}, ""}, // checked below
		{"NUL and invalid UTF-8", map[string]any{"k\x00": "v\xff"}, `{"k` + "\uFFFD" + `":"v\ufffd"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := jsonAttrs(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "channel kept as text" {
				var m map[string]string
				if err := json.Unmarshal(got, &m); err != nil || m["c"] == "" {
					t.Errorf("got %s (%v), want the channel as a string", got, err)
				}
				return
			}
			if string(got) != c.want || (got == nil) != (c.want == "") {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestMigrationFiles(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || ms[0].Name != "0001_application_logs.sql" {
		t.Fatalf("migrations start with %+v, want version 1, 0001_application_logs.sql", ms[0].Migration)
	}
	for i := 1; i < len(ms); i++ {
		if ms[i].Version <= ms[i-1].Version {
			t.Errorf("migration %s is out of order", ms[i].Name)
		}
	}
}
