package redact

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzText: Text, Query and JSONString never panic, keep valid UTF-8 valid, and JSONString keeps the
// content of a valid JSON string valid.
func FuzzText(f *testing.F) {
	for _, s := range []string{
		`password=x&a=1`, `{"secret":{"v":["x"]}}`, `<ns:password a="1">x</ns:password>`, "Bearer abcdefgh1",
		`https://u:p@h/`, "4111 1111 1111 1111", `"pass\u0077ord": "x"`, "-----BEGIN RSA PRIVATE KEY-----\nx",
		`token[]=a;user[password]=b`, `a\"b:c`, "eyJabcdefghij.eyJ12.x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Default.Text(s)
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("Text(%q) = %q: invalid UTF-8", s, out)
		}
		_ = Default.Query(s)
		_ = Default.Key(s)
		if !utf8.ValidString(s) || strings.ContainsAny(s, "\"\\") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 }) {
			q, _ := json.Marshal(s)
			s = string(q[1 : len(q)-1])
		}
		red, _ := Default.JSONString([]byte(s))
		var back string
		if err := json.Unmarshal([]byte(`"`+string(red)+`"`), &back); err != nil {
			t.Fatalf("JSONString(%q) = %q: not a JSON string: %v", s, red, err)
		}
	})
}
