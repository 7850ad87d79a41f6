package pgsink

import (
	"bytes"
	"unicode/utf8"

	"github.com/sluicelog/sluice/event"
)

// PostgreSQL refuses, in text and in jsonb, the NUL character and invalid UTF-8, and in jsonb also the
// escape \u0000 and unpaired UTF-16 surrogate escapes. One such event would fail its whole batch, so
// every text value and jsonb document is cleaned first: each offending byte, sequence or escape becomes
// U+FFFD, the replacement character, which keeps a visible mark where something was.

const replacement = "\uFFFD"

// cleanText returns s as PostgreSQL text accepts it: valid UTF-8 without NUL, by sluice's one rule for
// storable text (event.SafeString: each invalid byte and each NUL becomes U+FFFD). It does not
// allocate when s is already clean.
func cleanText(s string) string { return event.SafeString(s) }

// cleanJSON returns a JSON document (as produced by encoding/json, so without raw control characters)
// as jsonb accepts it: invalid UTF-8 inside strings and the escapes \u0000 and unpaired surrogates
// (\ud800-\udfff) become U+FFFD. Only real escapes are touched: in `\\u0000` the backslash is itself
// escaped and the rest is plain text. It returns b itself when nothing needs changing.
func cleanJSON(b []byte) []byte {
	if !utf8.Valid(b) {
		b = bytes.ToValidUTF8(b, []byte(replacement))
	}
	if bytes.IndexByte(b, '\\') < 0 {
		return b
	}
	var out []byte // nil until the first change
	done := 0      // b[:done] is in out
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' {
			i++ // a two-character escape: \\, \", \n, ...
			continue
		}
		r, ok := event.Hex4(b, i+2)
		if !ok {
			i++ // not valid JSON; leave it for PostgreSQL to report
			continue
		}
		n := 6 // length of the escape to keep or replace
		bad := false
		switch {
		case r == 0:
			bad = true
		case r >= 0xD800 && r <= 0xDBFF: // high surrogate: needs a low one right after
			if low, ok := event.Hex4(b, i+8); ok && b[i+6] == '\\' && b[i+7] == 'u' && low >= 0xDC00 && low <= 0xDFFF {
				n = 12
			} else {
				bad = true
			}
		case r >= 0xDC00 && r <= 0xDFFF: // low surrogate on its own
			bad = true
		}
		if bad {
			if out == nil {
				out = make([]byte, 0, len(b))
			}
			out = append(out, b[done:i]...)
			out = append(out, replacement...)
			done = i + n
		}
		i += n - 1
	}
	if out == nil {
		return b
	}
	return append(out, b[done:]...)
}
