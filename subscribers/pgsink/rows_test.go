package pgsink

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/sluicelog/sluice/event"
)

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
		}, `{"headers":{"X\ufffd":["v\ufffd"]},"body":{"size":1,"text":"\ufffd\ufffd"}}`}, // as encoding/json escapes invalid UTF-8
		{"NUL escape in JSON body", &event.Message{Body: &event.Body{Size: 1, JSON: json.RawMessage(`"\u0000"`)}},
			`{"body":{"size":1,"json":"\ufffd"}}`},
		{"number numeric refuses in JSON body", &event.Message{Body: &event.Body{Size: 1, JSON: json.RawMessage(`[1e1000000]`)}},
			`{"body":{"size":1,"json":["1e1000000"]}}`},
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
		{"NUL and invalid UTF-8", map[string]any{"k\x00": "v\xff"}, `{"k\ufffd":"v\ufffd"}`},
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
