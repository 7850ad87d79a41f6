package publishers

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
)

// DefaultReplacement is what a redacted value becomes.
const DefaultReplacement = "[REDACTED]"

// DefaultRedactedHeaders returns the headers whose values are redacted by default (deny-list mode).
func DefaultRedactedHeaders() []string {
	return []string{
		"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key",
		"X-Auth-Token", "X-Csrf-Token", "X-Xsrf-Token",
	}
}

// DefaultRedactedKeys returns the query parameters and JSON (or form) body keys whose values are
// redacted by default. Matching ignores case; body keys match at any depth.
func DefaultRedactedKeys() []string {
	return []string{
		"password", "passwd", "pwd", "secret", "client_secret", "token", "access_token", "refresh_token",
		"id_token", "api_key", "apikey", "authorization", "credit_card", "card_number", "cvv", "cvc", "ssn",
	}
}

// Redaction says which values are replaced before an event leaves the request. For each list, nil
// means the default list and an empty, non-nil list means none.
type Redaction struct {
	// Headers lists the request and response headers whose values are replaced (deny-list mode).
	// Default: DefaultRedactedHeaders.
	Headers []string
	// AllowHeaders, when not nil, switches headers to allow-list mode: only the headers listed keep their
	// values, every other header's values are replaced. Headers is then ignored.
	AllowHeaders []string
	// QueryParams lists the query parameters whose values are replaced. Default: DefaultRedactedKeys.
	QueryParams []string
	// BodyKeys lists the keys whose values are replaced in JSON bodies (at any depth) and form bodies.
	// Default: DefaultRedactedKeys.
	BodyKeys []string
	// Replacement is what a value becomes. Default: DefaultReplacement.
	Replacement string
}

// redactor is a Redaction compiled for the request path.
type redactor struct {
	headers  keySet
	allow    bool // headers is an allow-list
	query    keySet
	body     keySet
	repl     string // plain
	replJSON string // as a JSON string
}

func (r Redaction) compile() (*redactor, error) {
	c := &redactor{repl: r.Replacement}
	if c.repl == "" {
		c.repl = DefaultReplacement
	}
	if safeString(c.repl) != c.repl {
		return nil, fmt.Errorf("`Redaction.Replacement` (%q) must be valid UTF-8 without NUL", c.repl)
	}
	c.replJSON = jsonQuote(c.repl)
	names := r.Headers
	if names == nil {
		names = DefaultRedactedHeaders()
	}
	if r.AllowHeaders != nil {
		names, c.allow = r.AllowHeaders, true
	}
	for _, h := range names {
		if h == "" {
			return nil, fmt.Errorf("`Redaction` header list holds an empty name")
		}
	}
	c.headers = newKeySet(names)
	c.query = newKeySet(keyList(r.QueryParams))
	c.body = newKeySet(keyList(r.BodyKeys))
	return c, nil
}

func keyList(keys []string) []string {
	if keys == nil {
		return DefaultRedactedKeys()
	}
	return keys
}

func jsonQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (r *redactor) redactHeader(name string) bool {
	return has(&r.headers, name) != r.allow
}

// copyHeaders returns a copy of h with redacted values and safe strings. The copy is a clone of the map
// (one copy of its memory, no rehashing) that shares the value slices it does not change: net/http and
// Echo replace a header's slice (Set, Add, Del) rather than write into it, so the event's view cannot
// change after the request.
func (r *redactor) copyHeaders(h http.Header) map[string][]string {
	if len(h) == 0 {
		return nil
	}
	m := map[string][]string(maps.Clone(h))
	for k, vs := range h { // h, not m: m changes below
		redact := r.redactHeader(k)
		if sk := safeString(k); sk != k {
			delete(m, k)
			k = sk
		} else if !redact && safeStrings(vs) {
			continue // the common case: nothing to change
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			if redact {
				out[i] = r.repl
			} else {
				out[i] = safeString(v)
			}
		}
		m[k] = out
	}
	return m
}

func safeStrings(vs []string) bool {
	for _, v := range vs {
		if !isSafe(v) {
			return false
		}
	}
	return true
}

// redactQuery replaces the values of the listed parameters in a raw (still escaped) query string or
// form body. It returns raw itself when nothing matched.
func redactQuery(raw string, keys *keySet, repl string) string {
	if raw == "" || keys.empty() {
		return raw
	}
	var b strings.Builder
	changed := false
	for start := 0; ; {
		end := strings.IndexByte(raw[start:], '&')
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		part := raw[start:end]
		rawKey, _, _ := strings.Cut(part, "=")
		key := rawKey
		if strings.ContainsAny(key, "%+") {
			if k, err := url.QueryUnescape(key); err == nil {
				key = k
			}
		}
		if has(keys, key) {
			if !changed {
				changed = true
				b.Grow(len(raw) + len(repl))
				b.WriteString(raw[:start])
			}
			b.WriteString(rawKey)
			b.WriteByte('=')
			b.WriteString(repl)
		} else if changed {
			b.WriteString(part)
		}
		if end == len(raw) {
			break
		}
		if changed {
			b.WriteByte('&')
		}
		start = end + 1
	}
	if !changed {
		return raw
	}
	return b.String()
}
