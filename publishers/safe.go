package publishers

import (
	"strings"
	"unicode/utf8"
)

// safeString returns s as valid UTF-8 without NUL: each invalid byte and each NUL becomes U+FFFD.
// It does not allocate when s is already safe (the common case).
func safeString(s string) string {
	if i := firstUnsafe(s); i >= 0 {
		return sanitize(s, i)
	}
	return s
}

// isSafe reports whether s is valid UTF-8 without NUL.
func isSafe(s string) bool { return firstUnsafe(s) < 0 }

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

// safeBytes is safeString for a byte slice; truncated says that p was cut off, so that an incomplete
// rune at its end is dropped rather than replaced.
func safeBytes(p []byte, truncated bool) string {
	if truncated {
		p = trimPartialRune(p)
	}
	return safeString(string(p))
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of p (at most 3 bytes).
func trimPartialRune(p []byte) []byte {
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
