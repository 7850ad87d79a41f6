package redact

import (
	"net/url"
	"strings"
)

// Query returns a raw (still escaped) query string with the values of secret parameters replaced.
// Parameters are separated by & or ;, names are unescaped before they are matched (so bracket syntaxes
// such as token[]= and user[password]= and percent-encoded names are caught), and every value of a
// repeated name is replaced. A value whose name is not secret is still replaced as a whole when it
// holds a secret-looking value. It returns raw itself when nothing matched.
func (r *Redactor) Query(raw string) string {
	return r.query(raw, false)
}

// Form is Query for an application/x-www-form-urlencoded body: in allow-list mode for bodies, only
// the values of allowed keys are kept.
func (r *Redactor) Form(raw string) string {
	return r.query(raw, true)
}

func (r *Redactor) query(raw string, body bool) string {
	if r == nil || raw == "" {
		return raw
	}
	var b strings.Builder
	changed := false
	for start := 0; start <= len(raw); {
		end := strings.IndexAny(raw[start:], "&;")
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		part := raw[start:end]
		name, value, hasValue := strings.Cut(part, "=")
		redact := false
		if hasValue && value != "" {
			key := name
			if strings.ContainsAny(key, "%+") {
				if k, err := url.QueryUnescape(key); err == nil {
					key = k
				}
			}
			if body {
				redact = r.BodyKey([]byte(key))
			} else {
				redact = r.Key(key)
			}
			if !redact && r.detect {
				v := value
				if strings.ContainsAny(v, "%+") {
					if u, err := url.QueryUnescape(v); err == nil {
						v = u
					}
				}
				redact = r.Text(v) != v
			}
		}
		if redact && !changed {
			changed = true
			b.Grow(len(raw) + len(r.repl))
			b.WriteString(raw[:start])
		}
		if changed {
			if redact {
				b.WriteString(name)
				b.WriteByte('=')
				b.WriteString(r.repl)
			} else {
				b.WriteString(part)
			}
			if end < len(raw) {
				b.WriteByte(raw[end])
			}
		}
		start = end + 1
	}
	if !changed {
		return raw
	}
	return b.String()
}
