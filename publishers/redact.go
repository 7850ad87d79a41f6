package publishers

import (
	"maps"
	"net/http"
	"slices"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// copyHeaders sets msg's headers to a copy of h with safe strings, the values of secret headers
// replaced, secret-looking values in the others replaced (a URL with an access_token in a Referer or
// a Location, a bearer token in a custom header), and the limits applied. The copy is a clone of the
// map (one copy of its memory, no rehashing) that shares the value slices it does not change: net/http
// and Echo replace a header's slice (Set, Add, Del) rather than write into it, so the event's view
// cannot change after the request.
func copyHeaders(msg *event.Message, h http.Header, r *redact.Redactor, l *Limits) {
	if len(h) == 0 {
		return
	}
	lines, bytes, long := 0, 0, false
	for k, vs := range h {
		lines += len(vs)
		for _, v := range vs {
			bytes += len(k) + len(v)
			long = long || len(v) > l.MaxHeaderValueBytes
		}
	}
	if lines > l.MaxHeaders || bytes > l.MaxHeaderBytes || long {
		copyHeadersBounded(msg, h, r, l)
		return
	}
	m := map[string][]string(maps.Clone(h))
	for k, vs := range h { // h, not m: m changes below
		secret := r.Header(k)
		if sk := event.SafeString(k); sk != k {
			delete(m, k)
			k = sk
		} else if !secret && cleanValues(vs, r) {
			continue // the common case: nothing to change
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = headerValueFor(v, secret, r, l)
		}
		m[k] = out
	}
	msg.Headers = m
}

// copyHeadersBounded is copyHeaders for headers over a limit: names in order, values cut, lines
// kept until the count or the bytes would pass their limit.
func copyHeadersBounded(msg *event.Message, h http.Header, r *redact.Redactor, l *Limits) {
	names := slices.Sorted(maps.Keys(h))
	m := make(map[string][]string, min(len(h), l.MaxHeaders))
	lines, bytes := 0, 0
	for _, k := range names {
		secret := r.Header(k)
		sk := cut(event.SafeString(k), l.MaxHeaderValueBytes)
		for _, v := range h[k] {
			v = headerValueFor(v, secret, r, l)
			if lines+1 > l.MaxHeaders || bytes+len(sk)+len(v) > l.MaxHeaderBytes {
				msg.HeadersDropped++
				continue
			}
			lines++
			bytes += len(sk) + len(v)
			m[sk] = append(m[sk], v)
		}
	}
	if len(m) > 0 {
		msg.Headers = m
	}
}

func headerValueFor(v string, secret bool, r *redact.Redactor, l *Limits) string {
	if secret {
		return r.Replacement()
	}
	return cut(r.Text(event.SafeString(v)), l.MaxHeaderValueBytes)
}

// cleanValues reports whether every value is safe and holds nothing to redact.
func cleanValues(vs []string, r *redact.Redactor) bool {
	for _, v := range vs {
		if !event.IsSafe(v) || r.Text(v) != v {
			return false
		}
	}
	return true
}
