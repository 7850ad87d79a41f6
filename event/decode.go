package event

import (
	"bytes"
	"encoding/json"
	"math/bits"
	"strconv"
)

// LineError says which line of a payload could not be decoded, and why. Decode reports one per bad line
// and keeps the good ones: one bad event must not take its message with it.
type LineError struct {
	Line int    // 1-based
	Raw  []byte // the line as received
	Err  error
}

func (e *LineError) Error() string {
	return "event line " + strconv.Itoa(e.Line) + ": " + e.Err.Error()
}

func (e *LineError) Unwrap() error { return e.Err }

// Decode parses an NDJSON payload into events, keeping each line in Raw. A line is made storable
// first (SafeJSON: it may come from another process or another version), so Raw and every decoded
// text are storable text whoever wrote them; a line that needed no change is kept as it is. Bad lines
// are returned as LineErrors with the line as received; good lines are decoded whatever the bad ones.
// Every field is decoded as encoding/json decodes it, nested parts included: DecodeLean is the
// cheaper reading for code that stores events rather than looks into them.
func Decode(payload []byte) ([]*Event, []*LineError) { return decode(payload, false) }

// DecodeLean is Decode for lean events (see Lean): the nested parts (request, response, attrs) stay
// in Raw only, where RawMember reads them, and the other fields are read straight from the line, at a
// fraction of encoding/json's cost (a broker worker decodes every event it stores; the sinks store
// the nested parts as the JSON they are). It accepts and refuses what Decode accepts and refuses, and
// fills every other field alike, with one difference: it checks that request and response are
// objects (or null), not the types of their members, which it does not read (Decode refuses
// {"request":{"query":1}}, DecodeLean keeps it as it is written).
func DecodeLean(payload []byte) ([]*Event, []*LineError) { return decode(payload, true) }

func decode(payload []byte, lean bool) ([]*Event, []*LineError) {
	var (
		events []*Event
		bad    []*LineError
	)
	line := 0
	var tops *topMembers // lean: the scan's notes of each line's top-level members, one for them all
	if lean {
		tops = &topMembers{m: make([][4]int32, 0, 32)}
	}
	for len(payload) > 0 {
		i := bytes.IndexByte(payload, '\n')
		var l []byte
		if i < 0 {
			l, payload = payload, nil
		} else {
			l, payload = payload[:i], payload[i+1:]
		}
		line++
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		// Storable from here on, whoever wrote the line. Lean, the scan notes the top-level members,
		// which readTops reads where the line did not change.
		s := jsonScanner{in: l, limit: decodeDepth}
		if lean {
			tops.object, tops.m = false, tops.m[:0]
			s.tops = tops
		}
		if !s.document() {
			bad = append(bad, &LineError{Line: line, Raw: l, Err: &JSONError{Offset: s.at, Why: s.why}})
			continue
		}
		safe := l
		if s.changed {
			safe = append(s.out, l[s.from:]...)
		}
		e := new(Event)
		if lean && (!s.changed && e.readTops(safe, tops) || s.changed && e.readTop(safe)) {
			e.nested.base, e.nested.n = &safe[0], len(safe) // readMember noted where its nested parts are
		} else {
			*e = Event{}
			if err := json.Unmarshal(safe, e); err != nil {
				bad = append(bad, &LineError{Line: line, Raw: l, Err: err})
				continue
			}
		}
		if err := e.Validate(); err != nil {
			bad = append(bad, &LineError{Line: line, Raw: l, Err: err})
			continue
		}
		e.Raw = safe
		if lean {
			e.Lean()
		}
		events = append(events, e)
	}
	return events, bad
}

// readTop fills e from the top-level members of doc, a storable JSON document (SafeJSON's output),
// as json.Unmarshal would, except the nested parts, which it only checks are objects or null. It
// reports false for anything it does not read exactly as json.Unmarshal would (not an object, a key
// with escapes, a number a field cannot hold, a field of the wrong type, a key that matches a field
// only case-insensitively, a nested part twice): json.Unmarshal then reads the line, and says what is
// wrong with it. After false, e holds anything. Decode calls it only for a line its scan changed:
// elsewhere that scan's notes are read at once (readTops).
func (e *Event) readTop(doc []byte) bool {
	var t topMembers
	s := jsonScanner{in: doc, limit: decodeDepth, tops: &t}
	return s.document() && !s.changed && e.readTops(doc, &t)
}

// readTops is readTop for a document whose top-level members the scan that validated it noted, t.
func (e *Event) readTops(doc []byte, t *topMembers) bool {
	if !t.object {
		return false
	}
	var nested uint8 // the nested parts seen: 1 request, 2 response, 4 attrs
	for _, m := range t.m {
		key := doc[m[0]+1 : m[1]-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false // encoding/json matches the key unescaped
		}
		if !e.readMember(key, doc[m[2]:m[3]], int(m[2]), &nested) {
			return false
		}
	}
	return true
}

// readMember sets the field of key from the JSON value v, which starts at offset at of the document
// (see readTop).
func (e *Event) readMember(key, v []byte, at int, nested *uint8) bool {
	var (
		s   *string
		n   *int64
		bit uint8
	)
	switch string(key) { // no allocation: the compiler compares in place
	case "id":
		if v[0] == 'n' {
			return true // null leaves a field as it is, as encoding/json does
		}
		str, ok := plainString(v)
		return ok && e.ID.UnmarshalText(str) == nil
	case "ts":
		return e.TS.UnmarshalJSON(v) == nil // what encoding/json calls, null included
	case "level":
		s = (*string)(&e.Level)
	case "kind":
		s = (*string)(&e.Kind)
	case "message":
		s = &e.Message
	case "service":
		s = &e.Service
	case "request_id":
		s = &e.RequestID
	case "trace_id":
		s = &e.TraceID
	case "span_id":
		s = &e.SpanID
	case "method":
		s = &e.Method
	case "route":
		s = &e.Route
	case "path":
		s = &e.Path
	case "client_ip":
		s = &e.ClientIP
	case "user_agent":
		s = &e.UserAgent
	case "error":
		s = &e.Error
	case "source":
		s = &e.Source
	case "status":
		if v[0] == 'n' {
			return true
		}
		i, err := strconv.ParseInt(string(v), 10, strconv.IntSize)
		e.Status = int(i)
		return err == nil
	case "duration_ms":
		if v[0] == 'n' {
			return true
		}
		f, err := strconv.ParseFloat(string(v), 64)
		e.DurationMS = f
		return err == nil
	case "bytes_in":
		n = &e.BytesIn
	case "bytes_out":
		n = &e.BytesOut
	case "request":
		bit = 1
	case "response":
		bit = 2
	case "attrs":
		bit = 4
	default:
		return !foldsToField(key) // a member of no field is ignored, as encoding/json ignores it
	}
	if bit != 0 { // a nested part: an object or null, read later from Raw, where it is noted to be at
		// Twice (null or not), and encoding/json would keep the last where RawMember finds the first.
		if *nested&bit != 0 || (v[0] != '{' && v[0] != 'n') {
			return false
		}
		*nested |= bit
		e.nested.at[bits.TrailingZeros8(bit)] = [2]int32{int32(at), int32(at + len(v))}
		return true
	}
	switch {
	case v[0] == 'n':
		return true
	case s != nil:
		str, ok := readString(v)
		*s = str
		return ok
	case n != nil:
		i, err := strconv.ParseInt(string(v), 10, 64)
		*n = i
		return err == nil
	}
	return false // unreachable: every field above is a string, a number or a nested part
}

// plainString returns the content of the JSON string v when it has no escapes.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// readString decodes the JSON string v (encoding/json's own reading when it has escapes).
func readString(v []byte) (string, bool) {
	if str, ok := plainString(v); ok {
		return string(str), true
	}
	if v[0] != '"' {
		return "", false
	}
	var str string
	err := json.Unmarshal(v, &str)
	return str, err == nil
}

// fieldNames are the JSON names of Event's fields.
var fieldNames = []string{"id", "ts", "level", "kind", "message", "service", "request_id", "trace_id",
	"span_id", "method", "route", "path", "status", "duration_ms", "client_ip", "user_agent", "bytes_in",
	"bytes_out", "error", "request", "response", "attrs", "source"}

// foldsToField reports whether key names a field only case-insensitively ("Message"), which
// encoding/json also takes for the field.
func foldsToField(key []byte) bool {
	for _, f := range fieldNames {
		if bytes.EqualFold(key, []byte(f)) {
			return true
		}
	}
	return false
}
