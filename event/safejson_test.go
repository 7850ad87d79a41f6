package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSafeJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, c := range []struct {
		name, in, want string // want "" means invalid
	}{
		{"empty object", `{}`, `{}`},
		{"whitespace kept", " [ ] \n", " [ ] \n"},
		{"string", `"s"`, `"s"`},
		{"number", `-0.5e+10`, `-0.5e+10`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
		{"nested", `{"a":[1,{"b":"c"}]}`, `{"a":[1,{"b":"c"}]}`},
		{"harmless escapes", `{"a":"x\"y\\z\n\u00e9\u2028\/"}`, `{"a":"x\"y\\z\n\u00e9\u2028\/"}`},
		{"HTML and separators kept", "\"<&>\u2028\"", "\"<&>\u2028\""},
		{"NUL escape", `{"a":"x\u0000y"}`, `{"a":"x\ufffdy"}`},
		{"NUL escape in key", `{"\u0000":1}`, `{"\ufffd":1}`},
		{"escaped backslash then u0000", `{"a":"\\u0000"}`, `{"a":"\\u0000"}`},
		{"escaped backslash then real escape", `{"a":"\\\u0000"}`, `{"a":"\\\ufffd"}`},
		{"two escaped backslashes then u0000", `"\\\\u0000"`, `"\\\\u0000"`},
		{"surrogate pair", `"\ud83d\ude00"`, `"\ud83d\ude00"`},
		{"upper-case surrogate pair", `"\uD83D\uDE00"`, `"\uD83D\uDE00"`},
		{"lone high surrogate", `"\ud800"`, `"\ufffd"`},
		{"lone high surrogate then text", `"\ud800abcdef"`, `"\ufffdabcdef"`},
		{"high surrogate then non-surrogate escape", `"\ud800\u0041"`, `"\ufffd\u0041"`},
		{"two high surrogates", `"\ud800\ud83d\ude00"`, `"\ufffd\ud83d\ude00"`},
		{"lone low surrogate", `"\udc00x"`, `"\ufffdx"`},
		{"invalid UTF-8", "{\"a\":\"x\xffy\"}", `{"a":"x\ufffdy"}`},
		{"invalid UTF-8 in key", "{\"\xff\":1}", `{"\ufffd":1}`},
		{"invalid UTF-8, one per byte", "\"\xe2\x82\xed\xa0\x80\"", `"\ufffd\ufffd\ufffd\ufffd\ufffd"`},
		{"invalid UTF-8 and NUL escape", "[\"\xff\",\"\\u0000\"]", `["\ufffd","\ufffd"]`},
		{"valid UTF-8", `"héllo, 世界 😀"`, `"héllo, 世界 😀"`},
		{"numbers numeric holds", `[1e1000,1E-0999,1e-1000,0.5e+0001000]`, `[1e1000,1E-0999,1e-1000,0.5e+0001000]`},
		{"numbers numeric refuses", `[1e1000000,-1e-20000,2e+01001]`, `["1e1000000","-1e-20000","2e+01001"]`},
		{"too many digits", strings.Repeat("9", 1001), `"` + strings.Repeat("9", 1001) + `"`},
		{"digits enough", "0." + strings.Repeat("9", 999), "0." + strings.Repeat("9", 999)},
		{"deep enough", deep(MaxJSONDepth), deep(MaxJSONDepth)},
		{"nothing", ``, ""},
		{"only space", `  `, ""},
		{"open object", `{`, ""},
		{"key without value", `{"a"}`, ""},
		{"trailing comma", `{"a":1,}`, ""},
		{"trailing comma in array", `[1,]`, ""},
		{"leading zero", `01`, ""},
		{"no fraction", `1.`, ""},
		{"no exponent", `1e`, ""},
		{"bad literal", `tru`, ""},
		{"control in string", "\"a\x01\"", ""},
		{"raw NUL in string", "\"a\x00\"", ""},
		{"unknown escape", `"\x"`, ""},
		{"upper-case u", `"\U0000"`, ""},
		{"short escape", `"\u12"`, ""},
		{"short escape at end", `"\u00`, ""},
		{"two values", `{} {}`, ""},
		{"number key", `{1:2}`, ""},
		{"unterminated", `"abc`, ""},
		{"too deep", deep(MaxJSONDepth + 1), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := SafeJSON([]byte(c.in), nil)
			if c.want == "" {
				var je *JSONError
				if !errors.As(err, &je) {
					t.Errorf("SafeJSON(%.60q) = %.60q, %v; want a *JSONError", c.in, got, err)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Errorf("SafeJSON(%.60q)\n got %.60q, %v\nwant %.60q", c.in, got, err, c.want)
			}
		})
	}
}

func TestSafeJSONKeepsStorableInput(t *testing.T) {
	in := []byte(`{"a":"b","c":[1,2.5,"\n\u00e9"],"a_key_longer_than_32_bytes_xxxxxxxxxxxx":true}`)
	if out, err := SafeJSON(in, nil); err != nil || &out[0] != &in[0] {
		t.Errorf("SafeJSON copied a document that needed no change (%v)", err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = SafeJSON(in, nil) }); n != 0 {
		t.Errorf("SafeJSON allocates %v times when nothing changes", n)
	}
}

func TestSafeJSONErrorSaysWhere(t *testing.T) {
	_, err := SafeJSON([]byte(`{"a": [1, 2,]}`), nil)
	var je *JSONError
	if !errors.As(err, &je) || je.Offset != 12 || err.Error() != `invalid JSON at byte 12: unexpected ']' where a value should be` {
		t.Errorf("error %v (%#v)", err, je)
	}
}

// upperRewriter replaces the value of every key "secret", and each x with Y in the keys and strings
// that start with x.
type upperRewriter struct{ keys int }

func (r *upperRewriter) JSONKey(key []byte) (string, bool) {
	r.keys++
	return `"***"`, string(key) == "secret"
}

func (r *upperRewriter) JSONString(content []byte) ([]byte, bool) {
	if !bytes.HasPrefix(content, []byte("x")) {
		return content, false
	}
	return bytes.ReplaceAll(content, []byte("x"), []byte("Y")), true
}

func TestSafeJSONRewriter(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"secret":{"a":[1,"\u0000"]},"b":"xyx"}`, `{"secret":"***","b":"YyY"}`},
		{`{"xkey":"x\u0000x"}`, `{"Ykey":"Y\ufffdY"}`}, // the rewriter sees the storable content
		{`[{"secret":1},{"secret":2},{"secret":3}]`, `[{"secret":"***"},{"secret":"***"},{"secret":"***"}]`},
		{"{\"x\xff\":\"x\xff\"}", `{"Y\ufffd":"Y\ufffd"}`},
		{`{"secret":[1,}`, ""},
	} {
		r := &upperRewriter{}
		got, err := SafeJSON([]byte(c.in), r)
		if c.want == "" {
			if err == nil {
				t.Errorf("SafeJSON(%q) accepted invalid JSON: %q", c.in, got)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("SafeJSON(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	r := &upperRewriter{}
	if _, err := SafeJSON([]byte(`[{"secret":1,"a":2},{"secret":1,"a":2},{"secret":1,"a":2}]`), r); err != nil || r.keys != 2 {
		t.Errorf("the rewriter was asked about %d keys (%v), want 2: the answers for repeated keys are remembered", r.keys, err)
	}
}

// badEscape reports whether JSON text holds an escape PostgreSQL rejects: \u0000 or a lone surrogate.
func badEscape(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' {
			i++ // skip the escaped character
			continue
		}
		cp, ok := Hex4(b, i+2)
		if !ok || cp == 0 || cp >= 0xDC00 && cp <= 0xDFFF {
			return true
		}
		if cp >= 0xD800 && cp <= 0xDBFF {
			lo, ok := Hex4(b, i+8)
			if !ok || i+7 >= len(b) || b[i+6] != '\\' || b[i+7] != 'u' || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6
		}
		i += 5
	}
	return false
}

// numeric reports whether a JSON number is one the rule keeps as a number: at most 1,000 digits and an
// exponent within ±1,000.
func numeric(n string) bool {
	mant, exp, _ := strings.Cut(strings.ToLower(strings.TrimPrefix(n, "-")), "e")
	digits := len(strings.Replace(mant, ".", "", 1))
	exp = strings.TrimLeft(strings.TrimLeft(exp, "+-"), "0")
	return digits <= 1000 && (len(exp) < 4 || len(exp) == 4 && exp <= "1000")
}

// storable maps a value decoded with UseNumber to what SafeJSON's output decodes to: every string and
// key made safe, every number numeric cannot hold a string of its text. ok is false when two keys of
// an object become the same.
func storable(v any) (out any, ok bool) {
	switch x := v.(type) {
	case string:
		return SafeString(x), true
	case json.Number:
		if !numeric(string(x)) {
			return string(x), true
		}
		return x, true
	case []any:
		for i := range x {
			if x[i], ok = storable(x[i]); !ok {
				return nil, false
			}
		}
		return x, true
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			if _, dup := m[SafeString(k)]; dup {
				return nil, false
			}
			if m[SafeString(k)], ok = storable(val); !ok {
				return nil, false
			}
		}
		return m, true
	}
	return v, true
}

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%q does not decode: %v", b, err)
	}
	return v
}

// FuzzSafeJSON checks the one JSON scanner against encoding/json: it accepts exactly the valid
// documents (up to MaxJSONDepth); what it returns is valid JSON and storable text (valid UTF-8, no
// escape PostgreSQL's jsonb refuses, no number its numeric cannot hold) that decodes to the input's
// values made safe; a second pass changes nothing; and the encoder's compacting pass writes
// encoding/json's json.RawMessage bytes made storable.
func FuzzSafeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[{"b":1}],"c":"\u0000\ud800\udc00"}`, "\"\xff\xe2\x80\xa8<&>\"", `[1,2`,
		`-0.1e5`, `{"a":}`, `[1e1000000, 1e-999]`, ` { "k" : [ null , true ] } `, `"\ud800\u0041"`, `{"\u0000":1,"\ufffd":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := SafeJSON(in, nil)
		deep := bytes.Count(in, []byte("["))+bytes.Count(in, []byte("{")) > MaxJSONDepth
		if !deep && (err == nil) != json.Valid(in) {
			t.Fatalf("SafeJSON error %v, json.Valid=%v for %q", err, json.Valid(in), in)
		}
		if err != nil {
			if _, ok := appendRawJSON(nil, in); ok && !deep {
				t.Fatalf("appendRawJSON accepted %q, which SafeJSON refuses: %v", in, err)
			}
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) || badEscape(out) {
			t.Fatalf("SafeJSON(%q) = %q: not storable", in, out)
		}
		if again, err := SafeJSON(out, nil); err != nil || !bytes.Equal(again, out) || len(out) > 0 && &again[0] != &out[0] {
			t.Fatalf("SafeJSON is not idempotent on %q: %q, %v", out, again, err)
		}
		if want, ok := storable(decodeNumbers(t, in)); ok {
			got := decodeNumbers(t, out)
			w, _ := json.Marshal(want)
			g, _ := json.Marshal(got)
			if !bytes.Equal(w, g) {
				t.Fatalf("SafeJSON(%q) = %q decodes to %s, want %s", in, out, g, w)
			}
		}
		marshaled, err := json.Marshal(json.RawMessage(in))
		if err != nil {
			t.Fatalf("encoding/json refuses %q: %v", in, err)
		}
		want, err := safeJSON(marshaled, nil, decodeDepth)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := appendRawJSON([]byte("x"), in); !ok || !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Fatalf("appendRawJSON(%q) = %q, %v; want %q", in, got, ok, want)
		}
	})
}
