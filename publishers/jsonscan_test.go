package publishers

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicelog/sluice/redact"
)

// TestRewriteJSONFindsEverySpecialByteOfAString puts a quote, a backslash escape, a control byte, a
// NUL escape and invalid UTF-8 at every offset of strings longer than a word, where the scanner jumps
// eight bytes at a time: each must be found where it is.
func TestRewriteJSONFindsEverySpecialByteOfAString(t *testing.T) {
	for n := 0; n < 24; n++ {
		pad := strings.Repeat("a", n)
		for _, tt := range []struct{ in, want string }{
			{`{"` + pad + `":"` + pad + `"}`, ""},
			{`{"` + pad + `\"x":1}`, ""},
			{`["` + pad + `\u0000` + pad + `"]`, `["` + pad + `\ufffd` + pad + `"]`},
			{`["` + pad + "\xff" + pad + `"]`, `["` + pad + `\ufffd` + pad + `"]`},
			{`["` + pad + "é\n" + `"]`, "invalid"},
			{`{"` + pad + `_password":1,"password":"` + pad + `"}`, `{"` + pad + `_password":"[REDACTED]","password":"[REDACTED]"}`},
			{`["` + pad, "invalid"},
		} {
			out, ok := rewriteJSON([]byte(tt.in), redact.Default)
			switch {
			case tt.want == "invalid":
				if ok {
					t.Errorf("rewriteJSON(%q) accepted invalid JSON", tt.in)
				}
			case !ok:
				t.Errorf("rewriteJSON(%q) refused valid JSON", tt.in)
			case tt.want == "" && string(out) != tt.in, tt.want != "" && string(out) != tt.want:
				t.Errorf("rewriteJSON(%q) = %q, want %q", tt.in, out, tt.want)
			case !json.Valid(out):
				t.Errorf("rewriteJSON(%q) = %q: not JSON", tt.in, out)
			}
		}
	}
}
