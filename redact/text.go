package redact

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// span is a range of bytes to replace.
type span struct{ from, to int }

// Text returns s with the values of secret names replaced, in every shape the scanner knows:
// key=value (query strings, logfmt, connection strings, XML attributes), "key": value and key: value
// (JSON that could not be parsed, YAML, header lines; a quoted, bracketed or braced value is replaced
// to its end, through nesting and quotes), <key>value</key> (XML), and the secret-looking values found
// anywhere (see the package comment). It returns s itself when nothing matched.
func (r *Redactor) Text(s string) string {
	if r == nil || s == "" {
		return s
	}
	spans := spansOf(r, s, nil)
	if len(spans) == 0 {
		return s
	}
	return string(apply([]byte(nil), s, spans, r.repl))
}

// TextBytes is Text for a byte slice; it returns p itself when nothing matched.
func (r *Redactor) TextBytes(p []byte) []byte {
	if r == nil || len(p) == 0 {
		return p
	}
	spans := spansOf(r, p, nil)
	if len(spans) == 0 {
		return p
	}
	return apply(make([]byte, 0, len(p)), p, spans, r.repl)
}

// JSONKey says whether the value of a JSON object member with this key (its content between the
// quotes, still escaped) is replaced as a whole, as BodyKey decides, and with what JSON: the
// replacement as a JSON string. With JSONString it makes a *Redactor the rewriter of
// event.SafeJSON, which redacts a JSON body in the pass that validates it.
func (r *Redactor) JSONKey(content []byte) (value string, replace bool) {
	if r == nil {
		return "", false
	}
	if slices.Contains(content, '\\') {
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, content...), '"'), &s) != nil {
			return r.replJSON, true // a key that cannot be read is not known to be harmless
		}
		content = []byte(s)
	}
	return r.replJSON, r.BodyKey(content)
}

// JSONString redacts the content of a JSON string (between its quotes, still escaped) as Text does,
// returning the new escaped content and whether anything changed.
func (r *Redactor) JSONString(content []byte) ([]byte, bool) {
	if r == nil || len(content) == 0 {
		return content, false
	}
	if slices.Contains(content, '\\') {
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, content...), '"'), &s) != nil {
			return content, false
		}
		red := r.Text(s)
		if red == s {
			return content, false
		}
		q, _ := json.Marshal(red)
		return q[1 : len(q)-1], true
	}
	spans := spansOf(r, content, nil)
	if len(spans) == 0 {
		return content, false
	}
	inner := r.replJSON[1 : len(r.replJSON)-1]
	return apply(make([]byte, 0, len(content)), content, spans, inner), true
}

// apply appends in with spans (sorted, possibly overlapping) replaced by repl.
func apply[T string | []byte](out []byte, in T, spans []span, repl string) []byte {
	slices.SortFunc(spans, func(a, b span) int { return a.from - b.from })
	done := 0
	for _, sp := range spans {
		if sp.to <= done {
			continue
		}
		if sp.from < done {
			sp.from = done
		} else {
			out = append(out, in[done:sp.from]...)
			out = append(out, repl...)
		}
		done = sp.to
	}
	return append(out, in[done:]...)
}

// textSpecial marks the bytes at which a key/value shape may start.
var textSpecial = func() (t [256]bool) {
	t['='], t[':'], t['<'] = true, true, true
	return t
}()

// spansOf finds what Text replaces. It runs in time linear in len(p): every look back or ahead from a
// separator is bounded by a constant, except the value of a secret key, after which the scan goes on
// from the value's end.
func spansOf[T string | []byte](r *Redactor, p T, spans []span) []span {
	nextGT := -1 // the first '>' at or after i, len(p) when there is none
	for i := 0; i < len(p); i++ {
		if !textSpecial[p[i]] {
			continue
		}
		if n := len(spans); n > 0 && spans[n-1].to > i+1 {
			i = spans[n-1].to - 1 // the value just replaced holds nothing more to find
			continue
		}
		switch p[i] {
		case '=':
			if (i+1 < len(p) && p[i+1] == '=') || (i > 0 && (p[i-1] == '=' || p[i-1] == '!' || p[i-1] == '<' || p[i-1] == '>')) {
				continue
			}
			spans = keyValue(r, p, i, spans)
		case ':':
			if i+2 < len(p) && p[i+1] == '/' && p[i+2] == '/' {
				spans = userinfo(p, i+3, spans)
				continue
			}
			spans = keyValue(r, p, i, spans)
		case '<':
			if nextGT < i {
				if k := index(p[i:], '>'); k >= 0 {
					nextGT = i + k
				} else {
					nextGT = len(p)
				}
			}
			spans = xmlElement(r, p, i, nextGT, spans)
		}
	}
	if r.detect {
		spans = detect(p, spans)
	}
	return spans
}

func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == '[' || c == ']' || c == '$' || c == '@' || c >= 0x80
}

// Bounds of the scans around a separator: how far back a key is looked for, how far an XML tag's
// attributes and a URL's user information may reach.
const (
	maxKey      = 256
	maxTag      = 1024
	maxUserinfo = 512
)

// keyValue adds the value after the separator at sep when the key before it is secret.
func keyValue[T string | []byte](r *Redactor, p T, sep int, spans []span) []span {
	j := sep - 1
	for j >= 0 && (p[j] == ' ' || p[j] == '\t') {
		j--
	}
	if j < 0 {
		return spans
	}
	var key T
	if q := p[j]; q == '"' || q == '\'' {
		k := j - 1
		for k >= 0 && j-k <= maxKey && !(p[k] == q && (k == 0 || p[k-1] != '\\')) {
			k--
		}
		if k < 0 || j-k > maxKey {
			return spans
		}
		key = p[k+1 : j]
		if q == '"' && strings.Contains(string(key), `\`) {
			var s string
			if json.Unmarshal([]byte(p[k:j+1]), &s) == nil {
				return keyValueAfter(r, p, sep, r.Key(s), spans)
			}
		}
	} else {
		k := j
		for k >= 0 && j-k < maxKey && isKeyByte(p[k]) {
			k--
		}
		key = p[k+1 : j+1]
	}
	return keyValueAfter(r, p, sep, len(key) > 0 && matchName(r, key), spans)
}

// keyValueAfter adds the value after the separator at sep when secret is true.
func keyValueAfter[T string | []byte](r *Redactor, p T, sep int, secret bool, spans []span) []span {
	if !secret {
		return spans
	}
	v := sep + 1
	for v < len(p) && (p[v] == ' ' || p[v] == '\t') {
		v++
	}
	if v >= len(p) {
		return spans
	}
	var end int
	switch c := p[v]; {
	case c == '"' || c == '\'':
		end = closingQuote(p, v+1, c)
		if end > v+1 {
			inner := end
			if end <= len(p) && p[end-1] == c && end-1 > v {
				inner = end - 1
			}
			if inner > v+1 {
				spans = append(spans, span{v + 1, inner})
			}
		}
		return spans
	case c == '{' || c == '[':
		end = closingBracket(p, v)
	case p[sep] == '=':
		end = v
		for end < len(p) && !endsEqualsValue[p[end]] {
			end++
		}
	default: // key: value, to the end of the line
		end = v
		for end < len(p) && !endsColonValue[p[end]] {
			end++
		}
		for end > v && (p[end-1] == ' ' || p[end-1] == '\t') {
			end--
		}
	}
	if end > v {
		spans = append(spans, span{v, end})
	}
	return spans
}

// closingQuote returns the index after the quote q that closes a string whose content starts at i
// (backslash escapes skipped), or len(p).
func closingQuote[T string | []byte](p T, i int, q byte) int {
	for i < len(p) {
		switch p[i] {
		case '\\':
			i += 2
		case q:
			return i + 1
		default:
			i++
		}
	}
	return len(p)
}

// closingBracket returns the index after the bracket or brace that closes the one at i (strings and
// nesting followed), or len(p) when the text ends first.
func closingBracket[T string | []byte](p T, i int) int {
	depth := 0
	for i < len(p) {
		switch c := p[i]; c {
		case '"', '\'':
			i = closingQuote(p, i+1, c)
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(p)
}

// xmlElement adds the content of an XML element whose (local) name is secret; gt is the first '>'
// after lt (len(p) when there is none).
func xmlElement[T string | []byte](r *Redactor, p T, lt, gt int, spans []span) []span {
	i := lt + 1
	if i >= len(p) || !('a' <= p[i]|0x20 && p[i]|0x20 <= 'z') || gt >= len(p) || gt-lt > maxTag || p[gt-1] == '/' {
		return spans
	}
	for i < gt && (isKeyByte(p[i]) || p[i] == ':') {
		i++
	}
	name := p[lt+1 : i]
	for c := len(name) - 1; c >= 0; c-- {
		if name[c] == ':' {
			name = name[c+1:]
			break
		}
	}
	if !matchName(r, name) {
		return spans
	}
	start := gt + 1
	end := start
	for end < len(p) && !(p[end] == '<' && end+1 < len(p) && p[end+1] == '/') {
		end++
	}
	if end > start {
		spans = append(spans, span{start, end})
	}
	return spans
}

// index is bytes.IndexByte or strings.IndexByte.
func index[T string | []byte](p T, c byte) int {
	switch v := any(p).(type) {
	case string:
		return strings.IndexByte(v, c)
	case []byte:
		return bytes.IndexByte(v, c)
	}
	return -1
}

// userinfo adds the password of a URL's user information (scheme://user:password@host), starting
// after the "://".
func userinfo[T string | []byte](p T, i int, spans []span) []span {
	colon := -1
	for j := i; j < len(p) && j-i < maxUserinfo; j++ {
		switch p[j] {
		case ':':
			if colon < 0 {
				colon = j
			}
		case '@':
			if colon >= 0 && j > colon+1 {
				spans = append(spans, span{colon + 1, j})
			}
			return spans
		case '/', ' ', '\t', '\r', '\n', '?', '#', '"', '\'', '<', '>':
			return spans
		}
	}
	return spans
}

// The bytes that end an unquoted value after "=" and after ":".
var endsEqualsValue, endsColonValue = byteSet(" \t\r\n&;,\"'<>)}]#"), byteSet("\r\n,;}]&<")

func byteSet(s string) (t [256]bool) {
	for i := 0; i < len(s); i++ {
		t[s[i]] = true
	}
	return t
}
