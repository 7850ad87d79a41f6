package event

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestRawMember(t *testing.T) {
	raw := []byte(` { "id" : "x", "s":"a\"}{[\\", "request":{"headers":{"A":["}",  "]"]},"body":{"json":[1,{"b":"]"}]}} ,` +
		`"n": -1.5e3, "t":true,"attrs":{"k":null},"last":[]}`)
	for _, c := range []struct {
		key, want string
		ok        bool
	}{
		{"id", `"x"`, true},
		{"s", `"a\"}{[\\"`, true},
		{"request", `{"headers":{"A":["}",  "]"]},"body":{"json":[1,{"b":"]"}]}}`, true},
		{"n", `-1.5e3`, true},
		{"t", `true`, true},
		{"attrs", `{"k":null}`, true},
		{"last", `[]`, true},
		{"headers", "", false}, // nested, not top level
		{"missing", "", false},
	} {
		got, ok := RawMember(raw, c.key)
		if ok != c.ok || string(got) != c.want {
			t.Errorf("RawMember(%q) = %q, %v; want %q, %v", c.key, got, ok, c.want, c.ok)
		}
	}
	for _, bad := range []string{``, `[]`, `{"a"`, `{"a":`, `{"a":"x}`, `{"a":{"b":1}`, `{"a":1 "b":2}`, `{a:1}`} {
		if v, ok := RawMember([]byte(bad), "b"); ok {
			t.Errorf("RawMember(%q) = %q, true on malformed JSON", bad, v)
		}
	}
}

// The nested parts of an encoded event, read back from Raw, are the bytes their own encoders write:
// a sink reading a lean event stores what it would have stored from the full one.
func TestRawMemberOfEncodedEventMatchesItsParts(t *testing.T) {
	e := New(LevelWarn, KindHTTP, "GET /x")
	e.Request = &Message{Query: "a=1", Headers: map[string][]string{"Accept": {"*/*"}, "X-Q": {`"}]`}},
		Body: &Body{ContentType: "application/json", Size: 9, JSON: json.RawMessage(`{"a":[1]}`)}}
	e.Response = &Message{Headers: map[string][]string{"Content-Type": {"text/plain"}}, Body: &Body{Size: 2, Text: "ok"}}
	e.Attrs = map[string]any{"user": map[string]any{"id": 7}, "tags": []any{"a", "b"}, "when": time.Unix(0, 0).UTC()}
	raw, err := e.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := e.Request.AppendJSON(nil)
	resp, _ := e.Response.AppendJSON(nil)
	attrs, _ := AppendAttrsJSON(nil, e.Attrs)
	for key, want := range map[string][]byte{"request": req, "response": resp, "attrs": attrs} {
		got, ok := RawMember(raw, key)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("RawMember(%q) = %s, %v; want %s", key, got, ok, want)
		}
	}
	e.Raw = raw
	e.Lean()
	if e.Request != nil || e.Response != nil || e.Attrs != nil || e.Raw == nil {
		t.Fatalf("Lean left %+v", e)
	}
}

func FuzzRawMember(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,"]"]},"c":"d"}`), "a")
	f.Add([]byte(`{"request":{"x":"\\\""},"attrs":null}`), "attrs")
	f.Fuzz(func(t *testing.T, raw []byte, key string) {
		got, ok := RawMember(raw, key)
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return // malformed: RawMember may say anything but must not panic
		}
		want, has := m[key]
		if bytes.Contains(raw, []byte(`\`)) || !json.Valid(raw) {
			return // escaped keys are compared as written; duplicates: encoding/json keeps the last
		}
		if ok != has || (ok && !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want))) {
			if has && countKey(raw, key) > 1 {
				return
			}
			t.Fatalf("RawMember(%s, %q) = %s, %v; encoding/json: %s, %v", raw, key, got, ok, want, has)
		}
	})
}

func countKey(raw []byte, key string) int { return bytes.Count(raw, []byte(`"`+key+`"`)) }
