package event

import (
	"strings"
	"unicode/utf8"
)

// SafeString returns s as valid UTF-8 without NUL, as PostgreSQL text and jsonb strings need it (the one
// rule of sluice for storable text): each invalid byte and each NUL becomes U+FFFD.
// It does not allocate when s is already safe (the common case).
func SafeString(s string) string {
	if i := firstUnsafe(s); i >= 0 {
		return sanitize(s, i)
	}
	return s
}

// IsSafe reports whether s is valid UTF-8 without NUL.
func IsSafe(s string) bool { return firstUnsafe(s) < 0 }

// firstUnsafe returns where s stops being plain ASCII without NUL when the rest is not safe, or -1
// when all of s is safe.
func firstUnsafe(s string) int {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b == 0 || b >= utf8.RuneSelf {
			if b == 0 || !utf8.ValidString(s[i:]) || strings.IndexByte(s[i:], 0) >= 0 {
				return i
			}
			return -1
		}
	}
	return -1
}

// sanitize rewrites s from byte i on (s[:i] is known to be safe).
func sanitize(s string, i int) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c == 0 {
			b.WriteRune(utf8.RuneError)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// SafeBytes is SafeString for a byte slice; truncated says that p was cut off, so that an incomplete
// rune at its end is dropped rather than replaced.
func SafeBytes(p []byte, truncated bool) string {
	if truncated {
		p = TrimPartialRune(p)
	}
	return SafeString(string(p))
}

// TrimPartialRune drops an incomplete UTF-8 sequence at the end of p (at most 3 bytes).
func TrimPartialRune(p []byte) []byte {
	for k := 1; k <= 3 && k <= len(p); k++ {
		c := p[len(p)-k]
		if c < utf8.RuneSelf {
			return p // ASCII: nothing partial
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(p[len(p)-k:]) {
				return p[:len(p)-k]
			}
			return p
		}
	}
	return p
}

// Hex4 reads the four hexadecimal digits of a JSON \u escape at b[i:i+4]; ok is false when they are
// not there.
func Hex4(b []byte, i int) (r rune, ok bool) {
	if i < 0 || i+4 > len(b) {
		return 0, false
	}
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
