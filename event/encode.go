package event

import (
	"encoding/json"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// A hand-written encoder of Event, Message and attributes that writes the very bytes json.Marshal
// writes (same keys, order, omitempty, escaping, number format, sorted map keys), without reflection.
// Whatever it does not handle itself (a time RFC 3339 cannot hold, a NaN, an invalid or deeply nested
// body JSON, an attribute of a type outside the common ones that fails to encode) makes it give up, and
// the caller encodes the whole value with encoding/json: the rare case keeps encoding/json's bytes and
// its error. Attribute values of other types are encoded by json.Marshal one by one.

// AppendJSON appends the message's JSON encoding, as json.Marshal(m) writes it, to buf.
func (m *Message) AppendJSON(buf []byte) ([]byte, error) {
	if m == nil {
		return append(buf, "null"...), nil
	}
	buf = slices.Grow(buf, m.sizeHint())
	if b, ok := m.appendJSONFast(buf); ok {
		return b, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

// AppendAttrsJSON appends the attributes' JSON encoding, as json.Marshal(attrs) writes it, to buf.
func AppendAttrsJSON(buf []byte, attrs map[string]any) ([]byte, error) {
	buf = slices.Grow(buf, 64+48*len(attrs))
	if b, ok := appendAttrs(buf, attrs, 0); ok {
		return b, nil
	}
	b, err := json.Marshal(attrs)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

// sizeHint is a guess at the length of the message's encoding, so that AppendJSON of a new document
// allocates once.
func (m *Message) sizeHint() int {
	n := 64 + len(m.Query) + 64*len(m.Headers)
	if b := m.Body; b != nil {
		n += len(b.ContentType) + len(b.JSON) + len(b.Text) + len(b.Base64)
	}
	return n
}

// appendJSONFast appends json.Marshal(e)'s bytes to buf, or returns buf and false where it leaves the
// event to encoding/json.
func (e *Event) appendJSONFast(buf []byte) ([]byte, bool) {
	b := append(buf, `{"id":"`...)
	b = appendUUID(b, e.ID)
	b = append(b, `","ts":"`...)
	n := len(b)
	b = e.TS.AppendFormat(b, time.RFC3339Nano)
	if !strictRFC3339(b[n:]) {
		return buf, false
	}
	b = append(b, `","level":`...)
	b = appendString(b, string(e.Level))
	b = append(b, `,"kind":`...)
	b = appendString(b, string(e.Kind))
	b = append(b, `,"message":`...)
	b = appendString(b, e.Message)
	b = appendOptString(b, `,"service":`, e.Service)
	b = appendOptString(b, `,"request_id":`, e.RequestID)
	b = appendOptString(b, `,"trace_id":`, e.TraceID)
	b = appendOptString(b, `,"span_id":`, e.SpanID)
	b = appendOptString(b, `,"method":`, e.Method)
	b = appendOptString(b, `,"route":`, e.Route)
	b = appendOptString(b, `,"path":`, e.Path)
	if e.Status != 0 {
		b = strconv.AppendInt(append(b, `,"status":`...), int64(e.Status), 10)
	}
	ok := true
	if e.DurationMS != 0 {
		if b, ok = appendFloat(append(b, `,"duration_ms":`...), e.DurationMS, 64); !ok {
			return buf, false
		}
	}
	b = appendOptString(b, `,"client_ip":`, e.ClientIP)
	b = appendOptString(b, `,"user_agent":`, e.UserAgent)
	if e.BytesIn != 0 {
		b = strconv.AppendInt(append(b, `,"bytes_in":`...), e.BytesIn, 10)
	}
	if e.BytesOut != 0 {
		b = strconv.AppendInt(append(b, `,"bytes_out":`...), e.BytesOut, 10)
	}
	b = appendOptString(b, `,"error":`, e.Error)
	if e.Request != nil {
		if b, ok = e.Request.appendJSONFast(append(b, `,"request":`...)); !ok {
			return buf, false
		}
	}
	if e.Response != nil {
		if b, ok = e.Response.appendJSONFast(append(b, `,"response":`...)); !ok {
			return buf, false
		}
	}
	if len(e.Attrs) > 0 {
		if b, ok = appendAttrs(append(b, `,"attrs":`...), e.Attrs, 0); !ok {
			return buf, false
		}
	}
	b = appendOptString(b, `,"source":`, e.Source)
	return append(b, '}'), true
}

func (m *Message) appendJSONFast(b []byte) ([]byte, bool) {
	open := len(b)
	b = append(b, '{')
	if m.Query != "" {
		b = appendString(append(b, `"query":`...), m.Query)
	}
	if len(m.Headers) > 0 {
		if len(b) > open+1 {
			b = append(b, ',')
		}
		b = appendHeaders(append(b, `"headers":`...), m.Headers)
	}
	if m.HeadersDropped != 0 {
		if len(b) > open+1 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(append(b, `"headers_dropped":`...), int64(m.HeadersDropped), 10)
	}
	if m.Body != nil {
		if len(b) > open+1 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = m.Body.appendJSONFast(append(b, `"body":`...)); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func (body *Body) appendJSONFast(b []byte) ([]byte, bool) {
	b = append(b, '{')
	if body.ContentType != "" {
		b = append(appendString(append(b, `"content_type":`...), body.ContentType), ',')
	}
	b = strconv.AppendInt(append(b, `"size":`...), body.Size, 10)
	if body.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	if body.TimedOut {
		b = append(b, `,"timed_out":true`...)
	}
	b = appendOptString(b, `,"omitted":`, body.Omitted)
	if len(body.JSON) > 0 {
		var ok bool
		if b, ok = appendRawJSON(append(b, `,"json":`...), body.JSON); !ok {
			return b, false
		}
	}
	b = appendOptString(b, `,"text":`, body.Text)
	b = appendOptString(b, `,"base64":`, body.Base64)
	return append(b, '}'), true
}

type entry[V any] struct {
	key   string
	value V
}

// sortedEntries appends m's entries to buf sorted by key, the order in which encoding/json writes a map.
func sortedEntries[V any](m map[string]V, buf []entry[V]) []entry[V] {
	for k, v := range m {
		buf = append(buf, entry[V]{k, v})
	}
	if len(buf) > 16 {
		slices.SortFunc(buf, func(x, y entry[V]) int { return strings.Compare(x.key, y.key) })
		return buf
	}
	for i := 1; i < len(buf); i++ { // insertion sort: the usual few entries, without a call a comparison
		for j := i; j > 0 && buf[j].key < buf[j-1].key; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	return buf
}

// appendHeaders appends a header map, its keys sorted as encoding/json sorts them.
func appendHeaders(b []byte, h map[string][]string) []byte {
	var stack [32]entry[[]string]
	b = append(b, '{')
	for i, kv := range sortedEntries(h, stack[:0]) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, kv.key), ':')
		if kv.value == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, '[')
		for j, v := range kv.value {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, v)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// maxDepth bounds the nesting of attributes and body JSON the fast encoder follows (encoding/json
// follows the rest).
const maxDepth = 1000

// appendAttrs appends a map[string]any (null when nil), its keys sorted.
func appendAttrs(b []byte, attrs map[string]any, depth int) ([]byte, bool) {
	if attrs == nil {
		return append(b, "null"...), true
	}
	if depth > maxDepth {
		return b, false
	}
	var stack [16]entry[any]
	b = append(b, '{')
	ok := true
	for i, kv := range sortedEntries(attrs, stack[:0]) {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendAny(append(appendString(b, kv.key), ':'), kv.value, depth+1); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// appendAny appends an attribute value: the common types by hand, any other by json.Marshal.
func appendAny(b []byte, v any, depth int) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return appendString(b, v), true
	case bool:
		return strconv.AppendBool(b, v), true
	case float64:
		return appendFloat(b, v, 64)
	case float32:
		return appendFloat(b, float64(v), 32)
	case int:
		return strconv.AppendInt(b, int64(v), 10), true
	case int64:
		return strconv.AppendInt(b, v, 10), true
	case int32:
		return strconv.AppendInt(b, int64(v), 10), true
	case uint64:
		return strconv.AppendUint(b, v, 10), true
	case uint:
		return strconv.AppendUint(b, uint64(v), 10), true
	case map[string]any:
		return appendAttrs(b, v, depth)
	case []any:
		if v == nil {
			return append(b, "null"...), true
		}
		if depth > maxDepth {
			return b, false
		}
		b = append(b, '[')
		ok := true
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendAny(b, x, depth+1); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	}
	j, err := json.Marshal(v)
	if err != nil {
		return b, false
	}
	return append(b, j...), true
}

// appendFloat appends f as encoding/json's floatEncoder does (bits 32 or 64): like ES6, 'f' format
// unless the magnitude is below 1e-6 or from 1e21 on, then 'e' with no padding of the exponent. It
// refuses NaN and infinities, which encoding/json reports as errors.
func appendFloat(b []byte, f float64, bits int) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' { // e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

// strictRFC3339 reports whether t, a time as AppendFormat(RFC3339Nano) writes it, passes the checks of
// time.Time.MarshalJSON: a year of exactly four digits and a zone offset under 24 hours.
func strictRFC3339(t []byte) bool {
	if len(t) < len("2006-01-02T15:04:05Z") || t[4] != '-' {
		return false
	}
	if t[len(t)-1] == 'Z' {
		return true
	}
	c := t[len(t)-len("Z07:00")]
	h := t[len(t)-len("07:00"):]
	return !('0' <= c && c <= '9') && 10*(h[0]-'0')+(h[1]-'0') < 24
}

const hexDigits = "0123456789abcdef"

// appendUUID appends id as uuid's String and MarshalText write it.
func appendUUID(b []byte, id uuid.UUID) []byte {
	for i, x := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xF])
	}
	return b
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

// htmlSafe holds true for the ASCII bytes a JSON string carries as they are under json.Marshal's
// default HTML escaping: all but the controls, '"', '\\', '<', '>' and '&'.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// appendString appends s as a quoted JSON string escaped as encoding/json escapes it: \" \\ \b \f \n
// \r \t, other controls and <, >, & as \u00XX, U+2028 and U+2029 as \u2028 and \u2029, and each byte
// of invalid UTF-8 as \ufffd.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			if m := stringSpecial(load64(s[i:])); m == 0 {
				i += 8
				continue
			} else {
				i += bits.TrailingZeros64(m) / 8 // the first byte to look at
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Word-at-a-time scans: a uint64 holds 8 bytes of a string, the first in its low byte.
const (
	lsbs = 0x0101010101010101
	msbs = 0x8080808080808080
)

func load64[S string | []byte](s S) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// zeros flags (by its high bit) each zero byte of x; a flag may be false only above a true one, so the
// lowest flag is exact.
func zeros(x uint64) uint64 { return (x - lsbs) & ^x & msbs }

// stringSpecial flags the bytes of x that appendString cannot copy as they are: controls, '"', '\',
// '<', '>', '&' and non-ASCII. Its lowest flag is exact; 0 means all 8 bytes are plain.
func stringSpecial(x uint64) uint64 {
	return ((x - lsbs*0x20) & ^x & msbs) | // < 0x20
		zeros((x|lsbs*0x04)^(lsbs*'&')) | // '"' 0x22 or '&' 0x26
		zeros((x|lsbs*0x02)^(lsbs*'>')) | // '<' 0x3c or '>' 0x3e
		zeros(x^(lsbs*'\\')) |
		x&msbs
}

// appendRawJSON appends raw JSON as encoding/json writes a json.RawMessage: validated, whitespace
// outside strings dropped, and <, >, &, U+2028 and U+2029 inside strings escaped. It reports false
// for what encoding/json would refuse (and for nesting deeper than maxDepth).
func appendRawJSON(dst, src []byte) ([]byte, bool) {
	c := rawCompactor{src: src, dst: dst}
	if !c.value() {
		return dst, false
	}
	c.space()
	if c.i != len(src) {
		return dst, false
	}
	return append(c.dst, src[c.start:]...), true
}

// rawCompactor is a recursive-descent JSON validator that copies what it has read to dst, less the
// whitespace and with the escapes encoding/json's compaction adds.
type rawCompactor struct {
	src, dst []byte
	i        int // the next byte of src to read
	start    int // src[start:i] is still to be copied to dst
	depth    int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// space skips whitespace, dropping it from the copy.
func (c *rawCompactor) space() {
	i := c.i
	if i >= len(c.src) || !isSpace(c.src[i]) {
		return
	}
	c.dst = append(c.dst, c.src[c.start:i]...)
	for i++; i < len(c.src) && isSpace(c.src[i]); i++ {
	}
	c.i, c.start = i, i
}

// next returns the byte after any whitespace (0 at the end).
func (c *rawCompactor) next() byte {
	c.space()
	if c.i >= len(c.src) {
		return 0
	}
	return c.src[c.i]
}

func (c *rawCompactor) value() bool {
	switch b := c.next(); {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		return c.str()
	case b == '-' || isDigit(b):
		return c.number()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	}
	return false
}

func (c *rawCompactor) object() bool {
	if c.depth++; c.depth > maxDepth {
		return false
	}
	c.i++ // {
	if c.next() == '}' {
		c.i++
		c.depth--
		return true
	}
	for {
		if c.next() != '"' || !c.str() || c.next() != ':' {
			return false
		}
		c.i++
		if !c.value() {
			return false
		}
		switch c.next() {
		case ',':
			c.i++
		case '}':
			c.i++
			c.depth--
			return true
		default:
			return false
		}
	}
}

func (c *rawCompactor) array() bool {
	if c.depth++; c.depth > maxDepth {
		return false
	}
	c.i++ // [
	if c.next() == ']' {
		c.i++
		c.depth--
		return true
	}
	for {
		if !c.value() {
			return false
		}
		switch c.next() {
		case ',':
			c.i++
		case ']':
			c.i++
			c.depth--
			return true
		default:
			return false
		}
	}
}

// rawStrPlain holds true for the bytes a string carries on, with nothing to check or escape.
var rawStrPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = true
	}
	for _, c := range []byte{'"', '\\', '<', '>', '&', 0xE2} {
		t[c] = false
	}
	return t
}()

func (c *rawCompactor) str() bool {
	s := c.src
	for i := c.i + 1; i < len(s); {
		if i+8 <= len(s) {
			if m := stringSpecial(load64(s[i:])); m == 0 {
				i += 8
				continue
			} else {
				i += bits.TrailingZeros64(m) / 8
			}
		}
		b := s[i]
		if rawStrPlain[b] {
			i++
			continue
		}
		switch {
		case b == '"':
			c.i = i + 1
			return true
		case b == '\\':
			if i+1 >= len(s) {
				return false
			}
			switch s[i+1] {
			case 'b', 'f', 'n', 'r', 't', '\\', '/', '"':
				i += 2
			case 'u':
				if i+6 > len(s) || !isHex(s[i+2]) || !isHex(s[i+3]) || !isHex(s[i+4]) || !isHex(s[i+5]) {
					return false
				}
				i += 6
			default:
				return false
			}
		case b < 0x20:
			return false
		case b == '<' || b == '>' || b == '&':
			c.dst = append(c.dst, s[c.start:i]...)
			c.dst = append(c.dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			i++
			c.start = i
		default: // 0xE2: U+2028 and U+2029 are E2 80 A8 and E2 80 A9
			if i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&^1 == 0xA8 {
				c.dst = append(c.dst, s[c.start:i]...)
				c.dst = append(c.dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xF])
				i += 3
				c.start = i
			} else {
				i++
			}
		}
	}
	return false
}

func (c *rawCompactor) number() bool {
	s, i := c.src, c.i
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		for i++; i < len(s) && isDigit(s[i]); i++ {
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		if i++; i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i++; i < len(s) && isDigit(s[i]); i++ {
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		if i++; i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i++; i < len(s) && isDigit(s[i]); i++ {
		}
	}
	c.i = i
	return true
}

func (c *rawCompactor) literal(word string) bool {
	if len(c.src)-c.i < len(word) || string(c.src[c.i:c.i+len(word)]) != word {
		return false
	}
	c.i += len(word)
	return true
}
