package event

import "testing"

func TestSafeString(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"clean", "GET /hello 200", "GET /hello 200"},
		{"empty", "", ""},
		{"non-ASCII", "héllo, 世界 😀 ☃", "héllo, 世界 😀 ☃"},
		{"NUL", "a\x00b", "a\uFFFDb"},
		{"only NULs", "\x00\x00", "\uFFFD\uFFFD"},
		{"invalid byte", "a\xffb", "a\uFFFDb"},
		{"invalid run", "a\xff\xfe\xfdb", "a\uFFFD\uFFFD\uFFFDb"}, // one per byte, as encoding/json has it
		{"truncated sequence", "caf\xc3", "caf\uFFFD"},
		{"cut-off rune", "ok\xe2\x82", "ok\uFFFD\uFFFD"},
		{"overlong slash", "\xc0\xaf", "\uFFFD\uFFFD"},
		{"surrogate in UTF-8", "\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // an encoded surrogate is not valid UTF-8
		{"NUL and invalid", "a\x00b\xff\xfec", "a\uFFFDb\uFFFD\uFFFDc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := SafeString(c.in); got != c.want {
				t.Errorf("SafeString(%q) = %q, want %q", c.in, got, c.want)
			}
			if IsSafe(c.in) != (c.in == c.want) {
				t.Errorf("IsSafe(%q) = %v", c.in, IsSafe(c.in))
			}
		})
	}
	if got := SafeBytes([]byte("ok\xe2\x82"), true); got != "ok" {
		t.Errorf("a cut-off rune at the end of a truncated body: %q, want it dropped", got)
	}
	if n := testing.AllocsPerRun(100, func() { _ = SafeString("an already safe string, ☃") }); n != 0 {
		t.Errorf("SafeString allocates %v times for a safe string", n)
	}
}
