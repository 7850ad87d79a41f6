// Package event owns sluice's log event: its fields, its one JSON encoding, and the bus message format;
// and the one rule for storable text (SafeString for Go strings, SafeJSON, the one JSON scanner, for
// JSON documents), which the encoder applies as it writes and Decode to what it reads.
//
// The same JSON object is a PostgreSQL row's source (its field names are the table's column names), a
// line of a blob (gzip NDJSON), and a line of a bus message. A bus message carries one or more events as
// NDJSON so that a broker bus can carry batches. This package must not import any other sluice package.
package event

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Level is an event's severity, stored as its upper-case name.
type Level string

// The levels sluice knows, lowest first.
const (
	LevelDebug Level = "DEBUG"
	LevelInfo  Level = "INFO"
	LevelWarn  Level = "WARN"
	LevelError Level = "ERROR"
)

// Levels lists every level, lowest first.
var Levels = []Level{LevelDebug, LevelInfo, LevelWarn, LevelError}

// ParseLevel accepts a level name in any case (and "WARNING" for WARN).
func ParseLevel(s string) (Level, error) {
	switch string(bytes.ToUpper([]byte(s))) {
	case "DEBUG":
		return LevelDebug, nil
	case "INFO":
		return LevelInfo, nil
	case "WARN", "WARNING":
		return LevelWarn, nil
	case "ERROR":
		return LevelError, nil
	}
	return "", fmt.Errorf("unknown level %q (want one of DEBUG, INFO, WARN, ERROR)", s)
}

// Kind says where an event came from.
type Kind string

// The kinds of event.
const (
	KindHTTP Kind = "http" // one HTTP request and its response
	KindApp  Kind = "app"  // an application log record
)

// ParseKind accepts "http" or "app".
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case KindHTTP, KindApp:
		return Kind(s), nil
	}
	return "", fmt.Errorf("unknown kind %q (want http or app)", s)
}

// Event is one log event. Field names in JSON are the column names of the application_logs table; the
// nested Request, Response and Attrs are stored as jsonb.
type Event struct {
	ID        uuid.UUID `json:"id"` // UUIDv7: sorts by time
	TS        time.Time `json:"ts"` // event time, UTC
	Level     Level     `json:"level"`
	Kind      Kind      `json:"kind"`
	Message   string    `json:"message"`
	Service   string    `json:"service,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	TraceID   string    `json:"trace_id,omitempty"`
	SpanID    string    `json:"span_id,omitempty"`

	// HTTP events.
	Method     string   `json:"method,omitempty"`
	Route      string   `json:"route,omitempty"` // the route template, e.g. /users/:id
	Path       string   `json:"path,omitempty"`
	Status     int      `json:"status,omitempty"`
	DurationMS float64  `json:"duration_ms,omitempty"`
	ClientIP   string   `json:"client_ip,omitempty"`
	UserAgent  string   `json:"user_agent,omitempty"`
	BytesIn    int64    `json:"bytes_in,omitempty"`
	BytesOut   int64    `json:"bytes_out,omitempty"`
	Error      string   `json:"error,omitempty"`
	Request    *Message `json:"request,omitempty"`
	Response   *Message `json:"response,omitempty"`

	// Attrs holds application attributes (slog attributes and groups) and anything else.
	Attrs map[string]any `json:"attrs,omitempty"`
	// Source is the code location of an application log record ("file:line function").
	Source string `json:"source,omitempty"`

	// Raw is the event's JSON encoding (one line, no trailing newline): set by Pipeline.Publish when
	// it encodes the event into a chunk (after which the event is lean: Request, Response and Attrs
	// live on only in Raw, see Lean and RawMember), and by Decode for an event read off the bus. A
	// caller that sets it before Publish hands over bytes received from elsewhere, which the routes
	// decode and validate. Either way it is storable (AppendJSON writes storable JSON, Decode makes
	// a line storable), so sinks that store JSON store Raw as it is and do not encode the event again.
	Raw []byte `json:"-"`

	// nested is where Raw's nested parts are, when DecodeLean noted it (see RawNested).
	nested nestedSpans
}

// nestedSpans says where the nested parts of an event's Raw are: at[k] is [start, end) of request,
// response and attrs in Raw (end 0: absent), valid while Raw is the slice it was noted for (its first
// byte and length).
type nestedSpans struct {
	base *byte
	n    int
	at   [3][2]int32
}

// Message is the captured part of an HTTP request or response.
type Message struct {
	Query   string              `json:"query,omitempty"`
	Headers map[string][]string `json:"headers,omitempty"`
	// HeadersDropped counts the header lines left out for the capture limits (headers are kept in
	// name order until the count or bytes limit is reached).
	HeadersDropped int   `json:"headers_dropped,omitempty"`
	Body           *Body `json:"body,omitempty"`
}

// Body is a captured (and possibly truncated) HTTP body. Exactly one of JSON, Text and Base64 is set
// when any content was kept.
type Body struct {
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`                // bytes seen (the original size when known)
	Truncated   bool   `json:"truncated,omitempty"` // the kept content is a prefix
	TimedOut    bool   `json:"timed_out,omitempty"` // capture gave up after its timeout
	// Omitted says why the content was left out: "unparsed" (the redaction policy leaves out the
	// bodies it cannot parse) or "event_size" (the event was over the maximum event size).
	Omitted string          `json:"omitted,omitempty"`
	JSON    json.RawMessage `json:"json,omitempty"`
	Text    string          `json:"text,omitempty"`
	Base64  string          `json:"base64,omitempty"`
}

// New returns an event with a fresh UUIDv7 id, the time now in UTC, and the given level, kind and message.
// Ids made in one process increase.
func New(level Level, kind Kind, msg string) *Event {
	e, _ := NewTimed(level, kind, msg)
	return e
}

// NewTimed is New that also returns the clock reading it made (TS with its monotonic part), so that a
// caller that times something from the event's start need not read the clock again.
func NewTimed(level Level, kind Kind, msg string) (*Event, time.Time) {
	now := time.Now() // one clock read for the id and TS
	return &Event{ID: newID(now), TS: now.UTC(), Level: level, Kind: kind, Message: msg}, now
}

// AppendJSON appends the event's JSON encoding (no newline) to buf: encoding/json's bytes, made
// storable as SafeJSON makes a document (text with a NUL or invalid UTF-8, a body's JSON with an
// escape or a number PostgreSQL refuses: see encode.go). It uses Raw when set.
func (e *Event) AppendJSON(buf []byte) ([]byte, error) {
	if len(e.Raw) > 0 {
		return append(buf, e.Raw...), nil
	}
	if b, ok := e.appendJSONFast(buf); ok {
		return b, nil
	}
	return e.appendSlow(buf)
}

// appendSlow is AppendJSON's rare path, where the fast encoder leaves the event to encoding/json.
func (e *Event) appendSlow(buf []byte) ([]byte, error) {
	b, err := appendMarshaled(buf, e)
	if err != nil {
		return buf, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return b, nil
}

// EncodeRaw is AppendJSON for an event that is about to hold its encoding as Raw (SetRaw): it also
// notes where it wrote the nested parts (request, response, attrs), so that RawNested reads them
// without scanning the line. It writes e: call it only on an event no other goroutine reads.
func (e *Event) EncodeRaw(buf []byte) ([]byte, error) {
	if len(e.Raw) > 0 {
		return append(buf, e.Raw...), nil
	}
	start := len(buf)
	b, at, ok := e.appendJSONNoting(buf)
	if !ok {
		e.nested = nestedSpans{}
		return e.appendSlow(buf)
	}
	e.nested = nestedSpans{n: len(b) - start, at: at} // no base yet: SetRaw gives it
	return b, nil
}

// SetRaw sets Raw to raw. When raw is a copy of EncodeRaw's last encoding of e (its length, and
// the event unchanged since), RawNested then reads the nested parts where EncodeRaw noted them;
// otherwise as RawMember does. It writes e: call it only on an event no other goroutine reads.
func (e *Event) SetRaw(raw []byte) {
	e.Raw = raw
	if e.nested.base == nil && e.nested.n > 0 && e.nested.n == len(raw) {
		e.nested.base = &raw[0]
		return
	}
	e.nested = nestedSpans{}
}

// Validate reports what makes an event unstorable: a zero id or time, or an unknown level or kind.
func (e *Event) Validate() error {
	switch {
	case e.ID == uuid.Nil:
		return errors.New("event has no id")
	case e.TS.IsZero():
		return fmt.Errorf("event %s has no time", e.ID)
	}
	switch e.Level {
	case LevelDebug, LevelInfo, LevelWarn, LevelError:
	default:
		return fmt.Errorf("event %s: unknown level %q", e.ID, e.Level)
	}
	if _, err := ParseKind(string(e.Kind)); err != nil {
		return fmt.Errorf("event %s: %w", e.ID, err)
	}
	return nil
}

// The bus message format (version 1). A bus message is a chunk of events, so that the router, its
// middleware and a broker work per chunk, not per event:
//
//   - Payload: NDJSON, one event's JSON encoding (AppendJSON) per line, each line ending in '\n'. A
//     consumer decodes it with Decode, which keeps the good lines of a payload with bad ones.
//   - Metadata MetadataFormat: ChunkFormat ("ndjson/1"). A message without it is read as version 1
//     (the format of messages published before the key existed: one event per message).
//   - Metadata MetadataEvents: the number of lines, in decimal. The bus bounds by it.
//   - UUID: a fresh id per chunk (NewID), not an event's id.
//   - A compressed payload (see Compress) says so in its format: ChunkFormat, "+", and the
//     encoding ("ndjson/1+s2", "ndjson/1+zstd": ChunkFormatFor). A consumer decompresses it
//     (Decompress) before it decodes it; one that does not know the format refuses the chunk whole
//     (a dead letter of its bytes as received) rather than read compressed bytes as lines.
//
// In process the publisher may also put the decoded events in the message's context (NewContext), so
// that the subscriber need not decode what was just encoded; a broker carries only the payload.
const (
	// MetadataEvents is the number of events a bus message carries, in decimal. The bus bounds by it.
	MetadataEvents = "sluice_events"
	// MetadataFormat names the payload's format and version: ChunkFormat.
	MetadataFormat = "sluice_format"
	// ChunkFormat is the value of MetadataFormat for the format described above.
	ChunkFormat = "ndjson/1"
)

// ChunkFormatFor returns the MetadataFormat of a chunk compressed with encoding (EncodingNone or "":
// ChunkFormat).
func ChunkFormatFor(encoding string) string {
	if encoding == "" || encoding == EncodingNone {
		return ChunkFormat
	}
	return ChunkFormat + "+" + encoding
}

// ChunkEncoding returns the compression that a message's MetadataFormat names ("" for none), or an
// error when it names a format this version of sluice cannot read (an absent value is version 1).
func ChunkEncoding(format string) (string, error) {
	switch format {
	case "", ChunkFormat:
		return "", nil
	case ChunkFormatFor(EncodingS2):
		return EncodingS2, nil
	case ChunkFormatFor(EncodingZstd):
		return EncodingZstd, nil
	}
	return "", fmt.Errorf("unknown bus message format %q (this sluice reads %q, %q and %q)", format,
		ChunkFormat, ChunkFormatFor(EncodingS2), ChunkFormatFor(EncodingZstd))
}

// NewID returns a fresh UUIDv7 (the ids of events; also the ids of bus messages).
func NewID() uuid.UUID { return newID(time.Now()) }

// Encode returns the NDJSON payload of a bus message carrying events (one line each, newline-terminated).
func Encode(events ...*Event) ([]byte, error) {
	var buf []byte
	for _, e := range events {
		var err error
		if buf, err = e.AppendJSON(buf); err != nil {
			return nil, err
		}
		buf = append(buf, '\n')
	}
	return buf, nil
}

// BatchID derives a batch's id from the set of its events' ids, whatever their order. The same events
// always give the same id, so a batch replayed or retried (its messages redelivered in any order) gets
// the same name in every store: idempotent writes.
func BatchID(events []*Event) uuid.UUID {
	keys := make([][]byte, len(events))
	for i, e := range events {
		keys[i] = e.ID[:]
	}
	return SetID(keys)
}

// SetID derives a UUID of version 8 (custom) from a set of keys: a SHA-256 of the keys sorted and
// without repeats, so the same keys in any order, repeated or not, give the same id.
func SetID(keys [][]byte) uuid.UUID {
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, bytes.Compare)
	sorted = slices.CompactFunc(sorted, bytes.Equal)
	h := sha256.New()
	for _, k := range sorted {
		h.Write(k)
	}
	var id uuid.UUID
	copy(id[:], h.Sum(nil))
	id[6] = (id[6] & 0x0f) | 0x80 // version 8
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id
}

type contextKey struct{}

// NewContext returns ctx carrying the decoded events of a bus message. A publisher and a subscriber in
// the same process (the in-process bus hands subscribers the publisher's context) pass events this
// way, so the subscriber need not decode the payload it already has the events of; a broker bus
// carries only the payload, which is decoded. The events must not change once published.
func NewContext(ctx context.Context, events []*Event) context.Context {
	return context.WithValue(ctx, contextKey{}, events)
}

// FromContext returns the events NewContext put in ctx.
func FromContext(ctx context.Context) ([]*Event, bool) {
	events, ok := ctx.Value(contextKey{}).([]*Event)
	return events, ok
}
