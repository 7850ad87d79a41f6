package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sluicelog/sluice/event"
)

// appendJSONLine appends the event's JSON encoding (its Raw when set) and a newline to buf. A Raw set
// by hand that spans lines is compacted, so that every event is one line.
func appendJSONLine(buf []byte, e *event.Event) ([]byte, error) {
	n := len(buf)
	buf, err := e.AppendJSON(buf)
	if err != nil {
		return buf[:n], err
	}
	if bytes.IndexByte(buf[n:], '\n') >= 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, buf[n:]); err != nil {
			return buf[:n], fmt.Errorf("event %s: its raw encoding spans lines and is not valid JSON: %w", e.ID, err)
		}
		buf = append(buf[:n], c.Bytes()...)
	}
	return append(buf, '\n'), nil
}

// The text format, one line per event: the time, the level padded to 5, then for an HTTP event its
// method, path, status, duration and request id, for any other its message and attributes (groups
// flattened with dots, keys sorted), then error=... if it has one:
//
//	2025-03-14T09:26:53.120Z INFO  GET /api/v1/orders/1042 200 12.5ms 7d1c2b4e
//	2025-03-14T09:26:53.121Z WARN  payment provider slow attempt=2 cache.hits=14 provider=acme-pay
//
// Values with spaces, '=', '"' or anything escaped are quoted. Nothing of the event's data reaches the
// line unescaped that a terminal would act on (see appendEscaped).

// textTime is the time layout of the text format: RFC 3339 to the millisecond, printed in UTC ("Z").
const textTime = "2006-01-02T15:04:05.000Z07:00"

// levelWidth is the width the level is padded to: the longest level's.
const levelWidth = 5

// maxGroupDepth bounds the flattening of attribute groups; a deeper group is printed as its JSON.
const maxGroupDepth = 16

func (s *Sink) appendText(b []byte, e *event.Event) []byte {
	b = e.TS.UTC().AppendFormat(b, textTime)
	b = append(b, ' ')
	b = appendLevel(b, e.Level, s.cfg.Color)
	b = append(b, ' ')
	if e.Kind == event.KindHTTP {
		b = appendField(b, e.Method)
		b = append(b, ' ')
		b = appendField(b, e.Path)
		b = append(b, ' ')
		if e.Status != 0 {
			b = strconv.AppendInt(b, int64(e.Status), 10)
		} else {
			b = append(b, '-')
		}
		b = append(b, ' ')
		b = appendMillis(b, e.DurationMS)
		if e.RequestID != "" {
			b = append(b, ' ')
			b = appendValue(b, e.RequestID)
		}
	} else {
		b = appendEscaped(b, e.Message, false)
		b = appendAttrs(b, e)
	}
	if e.Error != "" {
		b = append(b, " error="...)
		b = appendValue(b, e.Error)
	}
	return append(b, '\n')
}

// levelColor is the ANSI color of a level, or "" for a level sluice does not know.
func levelColor(l event.Level) string {
	switch l {
	case event.LevelDebug:
		return "\x1b[37m" // gray
	case event.LevelInfo:
		return "\x1b[36m" // cyan
	case event.LevelWarn:
		return "\x1b[33m" // yellow
	case event.LevelError:
		return "\x1b[31m" // red
	}
	return ""
}

const colorReset = "\x1b[0m"

// appendLevel appends the level, colored when color is set, padded with spaces to levelWidth.
func appendLevel(b []byte, l event.Level, color bool) []byte {
	code := ""
	if color {
		code = levelColor(l)
	}
	b = append(b, code...)
	n := len(b)
	b = appendEscaped(b, string(l), false)
	width := utf8.RuneCount(b[n:])
	if code != "" {
		b = append(b, colorReset...)
	}
	for ; width < levelWidth; width++ {
		b = append(b, ' ')
	}
	return b
}

// appendField appends a positional field of an HTTP event: "-" when empty.
func appendField(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendValue(b, s)
}

// appendMillis appends a duration in milliseconds, to the microsecond: "12.5ms".
func appendMillis(b []byte, ms float64) []byte {
	if !math.IsNaN(ms) && !math.IsInf(ms, 0) && math.Abs(ms) < 1e15 {
		ms = math.Round(ms*1000) / 1000
	}
	return append(appendFloat(b, ms, 64), "ms"...)
}

// appendAttrs appends the attributes of an event as " key=value" each, keys sorted and groups
// flattened ("cache.hits=14"). A lean event (event.Lean) has them in its Raw only.
func appendAttrs(b []byte, e *event.Event) []byte {
	attrs := e.Attrs
	if attrs == nil && len(e.Raw) > 0 {
		raw, ok := e.RawNested("attrs")
		if !ok {
			return b
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber() // numbers as written: an id of 2^53+1 is not rounded
		if err := d.Decode(&attrs); err != nil {
			b = append(b, " attrs="...)
			return appendValue(b, string(raw))
		}
	}
	return appendGroup(b, "", attrs, 0)
}

func appendGroup(b []byte, prefix string, attrs map[string]any, depth int) []byte {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		v := attrs[k]
		if g, ok := v.(map[string]any); ok && depth < maxGroupDepth {
			b = appendGroup(b, prefix+k+".", g, depth+1)
			continue
		}
		b = append(b, ' ')
		b = appendValue(b, prefix+k)
		b = append(b, '=')
		b = appendValue(b, attrText(v))
	}
	return b
}

// attrText is an attribute value as text: strings as they are, numbers as JSON writes them, and other
// values as their JSON (or their error, when they have no JSON).
func attrText(v any) (text string) {
	defer func() { // a String or MarshalJSON method that panics (a nil receiver) must not lose the batch
		if r := recover(); r != nil {
			text = fmt.Sprintf("!PANIC: %v", r)
		}
	}()
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return t
	case bool:
		return strconv.FormatBool(t)
	case float64:
		return string(appendFloat(nil, t, 64))
	case float32:
		return string(appendFloat(nil, float64(t), 32))
	case int:
		return strconv.Itoa(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case int32:
		return strconv.FormatInt(int64(t), 10)
	case uint64:
		return strconv.FormatUint(t, 10)
	case uint:
		return strconv.FormatUint(uint64(t), 10)
	case uint32:
		return strconv.FormatUint(uint64(t), 10)
	case json.Number:
		return string(t)
	case json.RawMessage:
		return string(t)
	case time.Time:
		return t.Format(time.RFC3339Nano)
	case time.Duration:
		return t.String()
	case error:
		return t.Error()
	}
	j, err := json.Marshal(v)
	if err != nil {
		return "!ERROR: " + err.Error()
	}
	return string(j)
}

// appendFloat appends f as JSON writes a number (exponent only when very small or very large), and
// NaN and infinities by name.
func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendFloat(b, f, 'g', -1, bits)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, bits)
}

// appendValue appends s as a value of the text format: as it is, or quoted (and escaped) when it is
// empty or holds a space, '=', '"' or anything appendEscaped escapes.
func appendValue(b []byte, s string) []byte {
	if !needsQuotes(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	b = appendEscaped(b, s, true)
	return append(b, '"')
}

func needsQuotes(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == '=' || c == '"' || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !strconv.IsGraphic(r) {
			return true
		}
		i += size
	}
	return false
}

const hex = "0123456789abcdef"

// appendEscaped appends s with everything a terminal could act on escaped, Go style: \n, \r and \t;
// the other C0 controls, DEL and the bytes of invalid UTF-8 as \xNN; and every other rune that is not
// graphic (C1 controls, bidirectional and other invisible format characters, line and paragraph
// separators, private use) as \uNNNN or \UNNNNNNNN. Within quotes (quoted) it also escapes '"' and
// '\\', so that a quoted value ends where its closing quote is.
func appendEscaped(b []byte, s string, quoted bool) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\n':
				b = append(b, `\n`...)
			case c == '\r':
				b = append(b, `\r`...)
			case c == '\t':
				b = append(b, `\t`...)
			case c < ' ' || c == 0x7f:
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			case quoted && (c == '"' || c == '\\'):
				b = append(b, '\\', c)
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		case !strconv.IsGraphic(r):
			if r <= 0xffff {
				b = append(b, '\\', 'u')
				b = appendHex(b, uint32(r), 4)
			} else {
				b = append(b, '\\', 'U')
				b = appendHex(b, uint32(r), 8)
			}
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

func appendHex(b []byte, v uint32, digits int) []byte {
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b = append(b, hex[v>>shift&0xf])
	}
	return b
}

// The pieces of the text format, for other renderings of events (the sluice logs command's table):
// nothing of the event's data comes out unescaped that a terminal would act on.

// AppendLevel appends a level, colored when color is set, padded to the longest level's width.
func AppendLevel(b []byte, l event.Level, color bool) []byte { return appendLevel(b, l, color) }

// AppendValue appends a value, quoted when it has spaces, '=', '"' or anything escaped.
func AppendValue(b []byte, s string) []byte { return appendValue(b, s) }

// AppendEscaped appends s with control and other non-graphic characters escaped, unquoted.
func AppendEscaped(b []byte, s string) []byte { return appendEscaped(b, s, false) }

// AppendAttrs appends an event's attributes as " key=value" each, keys sorted, groups flattened.
func AppendAttrs(b []byte, e *event.Event) []byte { return appendAttrs(b, e) }
