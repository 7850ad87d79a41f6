package event

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// A hand-written encoder of Event, Message and attributes that writes, without reflection, the bytes
// json.Marshal writes (same keys, order, omitempty, escaping, number format, sorted map keys) made
// storable as SafeJSON makes them: a NUL in a string is written \ufffd (as invalid UTF-8 is), and a
// body's JSON or a value encoded by json.Marshal goes through the one JSON scanner. Whatever it does
// not handle itself (a time RFC 3339 cannot hold, a NaN, an invalid or deeply nested body JSON, an
// attribute of a type outside the common ones that fails to encode) makes it give up, and the caller
// encodes the whole value with encoding/json, then makes that storable: the rare case keeps
// encoding/json's bytes and its error. Attribute values of other types are encoded by json.Marshal one
// by one. For every value v, the encoding is SafeJSON(json.Marshal(v)).

// AppendJSON appends the message's JSON encoding, as json.Marshal(m) writes it, to buf.
func (m *Message) AppendJSON(buf []byte) ([]byte, error) {
	if m == nil {
		return append(buf, "null"...), nil
	}
	buf = slices.Grow(buf, m.sizeHint())
	if b, ok := m.appendJSONFast(buf); ok {
		return b, nil
	}
	return appendMarshaled(buf, m)
}

// AppendAttrsJSON appends the attributes' JSON encoding, as json.Marshal(attrs) writes it, to buf.
func AppendAttrsJSON(buf []byte, attrs map[string]any) ([]byte, error) {
	buf = slices.Grow(buf, 64+48*len(attrs))
	if b, ok := appendAttrs(buf, attrs, 0); ok {
		return b, nil
	}
	return appendMarshaled(buf, attrs)
}

// appendMarshaled appends encoding/json's encoding of v made storable: the encoder's rare path.
func appendMarshaled(buf []byte, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return buf, err
	}
	b, ok := appendCompact(buf, j, decodeDepth)
	if !ok { // valid JSON, so it is deeper than the scanner follows
		return buf, fmt.Errorf("json: nested deeper than %d levels", decodeDepth)
	}
	return b, nil
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
	b, _, ok := e.appendJSONNoting(buf)
	return b, ok
}

// appendJSONNoting is appendJSONFast that also returns where it wrote the nested parts: at[k] is
// [start, end) of request, response and attrs, from the start of the event's encoding (end 0:
// absent), as nestedSpans holds them.
func (e *Event) appendJSONNoting(buf []byte) (_ []byte, at [3][2]int32, _ bool) {
	start := len(buf)
	b := append(buf, `{"id":"`...)
	b = appendUUID(b, e.ID)
	b = append(b, `","ts":"`...)
	n := len(b)
	b = e.TS.AppendFormat(b, time.RFC3339Nano)
	if !strictRFC3339(b[n:]) {
		return buf, at, false
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
			return buf, at, false
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
		b = append(b, `,"request":`...)
		n := len(b)
		if b, ok = e.Request.appendJSONFast(b); !ok {
			return buf, at, false
		}
		at[0] = [2]int32{int32(n - start), int32(len(b) - start)}
	}
	if e.Response != nil {
		b = append(b, `,"response":`...)
		n := len(b)
		if b, ok = e.Response.appendJSONFast(b); !ok {
			return buf, at, false
		}
		at[1] = [2]int32{int32(n - start), int32(len(b) - start)}
	}
	if len(e.Attrs) > 0 {
		b = append(b, `,"attrs":`...)
		n := len(b)
		if b, ok = appendAttrs(b, e.Attrs, 0); !ok {
			return buf, at, false
		}
		at[2] = [2]int32{int32(n - start), int32(len(b) - start)}
	}
	b = appendOptString(b, `,"source":`, e.Source)
	return append(b, '}'), at, true
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

// appendAttrs appends a map[string]any (null when nil), its keys sorted.
func appendAttrs(b []byte, attrs map[string]any, depth int) ([]byte, bool) {
	if attrs == nil {
		return append(b, "null"...), true
	}
	if depth > MaxJSONDepth {
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
		if depth > MaxJSONDepth {
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
	return appendRawJSON(b, j)
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
			case 0: // storable: NUL becomes U+FFFD, as SafeString has it
				b = append(b, escapedReplacement...)
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

// stringStop flags the bytes of x that a string does not carry as they are: controls, '"', '\' and
// non-ASCII (to be checked as UTF-8). Its lowest flag is exact; 0 means all 8 bytes are plain.
func stringStop(x uint64) uint64 {
	return ((x - lsbs*0x20) & ^x & msbs) | zeros(x^(lsbs*'"')) | zeros(x^(lsbs*'\\')) | x&msbs
}
