package pgsink

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluicelog/sluice/event"
)

// columnNames are the columns a row fills, in the order of eventRow's values.
var columnNames = []string{"id", "ts", "level", "kind", "message", "service", "request_id", "trace_id",
	"span_id", "method", "route", "path", "status", "duration_ms", "client_ip", "user_agent", "bytes_in",
	"bytes_out", "error", "source", "request", "response", "attrs"}

// PostgreSQL's timestamptz range: [4714-11-24 BC, 294277-01-01) UTC. Go's year -4713 is 4714 BC. A time
// outside it would fail the batch with SQLSTATE 22008 or, far enough out, overflow pgx's microsecond
// encoding into a wrong but valid time; it is refused before anything is sent.
var (
	minTS = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	maxTS = time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)
)

// eventRows returns the rows of the events, skipping any whose id came earlier in the batch (the first
// copy wins) and any that cannot be stored; for those it returns one error each.
func eventRows(events []*event.Event) (rows []row, bad []error) {
	seen := make(map[uuid.UUID]struct{}, len(events))
	rows = make([]row, 0, len(events))
	for i, e := range events {
		if e == nil {
			bad = append(bad, fmt.Errorf("%w: event %d is nil", ErrInvalidEvent, i))
			continue
		}
		if _, dup := seen[e.ID]; dup {
			continue
		}
		r, err := makeRow(e)
		if err != nil {
			bad = append(bad, fmt.Errorf("%w: event %d: %w", ErrInvalidEvent, i, err))
			continue
		}
		seen[e.ID] = struct{}{}
		rows = append(rows, r)
	}
	return rows, bad
}

// row is an event's values, in the order of columnNames, each ready for PostgreSQL: text made
// storable (event.SafeString: an event built by hand may hold a NUL), jsonb as the event's storable
// JSON (its Raw, or the encoder's: see event.AppendJSON). An optional column whose field the event's
// JSON omits (empty string, zero number, no document) is NULL.
type row struct {
	id                                  uuid.UUID
	ts                                  time.Time
	level, kind, message                string
	service, requestID, traceID, spanID string
	method, route, path                 string
	status                              int32
	durationMS                          float64
	clientIP, userAgent                 string
	bytesIn, bytesOut                   int64
	errText, source                     string
	request, response, attrs            []byte
}

// makeRow returns an event's row, or why it cannot be stored.
func makeRow(e *event.Event) (row, error) {
	if err := e.Validate(); err != nil {
		return row{}, err
	}
	if e.TS.Before(minTS) || !e.TS.Before(maxTS) {
		return row{}, fmt.Errorf("event %s: time %s is outside PostgreSQL's timestamptz range", e.ID, e.TS.UTC())
	}
	req, err := jsonMessage(e.Request)
	if err != nil {
		return row{}, fmt.Errorf("event %s: request: %w", e.ID, err)
	}
	resp, err := jsonMessage(e.Response)
	if err != nil {
		return row{}, fmt.Errorf("event %s: response: %w", e.ID, err)
	}
	attrs, err := jsonAttrs(e.Attrs)
	if err != nil {
		return row{}, fmt.Errorf("event %s: attrs: %w", e.ID, err)
	}
	if len(e.Raw) > 0 { // a lean event (event.Lean): its nested parts are in its encoding only
		if e.Request == nil {
			req = rawJSON(e, "request")
		}
		if e.Response == nil {
			resp = rawJSON(e, "response")
		}
		if e.Attrs == nil {
			attrs = rawJSON(e, "attrs")
		}
	}
	safe := event.SafeString
	return row{
		id: e.ID, ts: e.TS, level: string(e.Level), kind: string(e.Kind), message: safe(e.Message),
		service: safe(e.Service), requestID: safe(e.RequestID), traceID: safe(e.TraceID), spanID: safe(e.SpanID),
		method: safe(e.Method), route: safe(e.Route), path: safe(e.Path),
		status: int32(e.Status), durationMS: e.DurationMS,
		clientIP: safe(e.ClientIP), userAgent: safe(e.UserAgent), bytesIn: e.BytesIn, bytesOut: e.BytesOut,
		errText: safe(e.Error), source: safe(e.Source),
		request: req, response: resp, attrs: attrs,
	}, nil
}

// values returns the row as pgx takes it (Row's form).
func (r *row) values() []any {
	return []any{
		pgtype.UUID{Bytes: r.id, Valid: true}, r.ts, r.level, r.kind, r.message, // the id as 16 bytes: a uuid.UUID would go through its text form
		optText(r.service), optText(r.requestID), optText(r.traceID), optText(r.spanID),
		optText(r.method), optText(r.route), optText(r.path),
		optNumber(r.status), optNumber(r.durationMS),
		optText(r.clientIP), optText(r.userAgent), optNumber(r.bytesIn), optNumber(r.bytesOut),
		optText(r.errText), optText(r.source),
		optJSON(r.request), optJSON(r.response), optJSON(r.attrs),
	}
}

// optText is an optional text column: NULL when empty.
func optText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// optNumber is an optional number column: NULL when zero.
func optNumber[N int32 | int64 | float64](n N) any {
	if n == 0 {
		return nil
	}
	return n
}

// optJSON is an optional jsonb column: NULL when there is no document.
func optJSON(doc []byte) any {
	if doc == nil {
		return nil
	}
	return doc
}

// rawJSON is the member key of an event's encoding (storable: see event.Event.Raw), or nil when it is
// absent or null.
func rawJSON(e *event.Event, key string) []byte {
	v, ok := e.RawNested(key)
	if !ok || string(v) == "null" {
		return nil
	}
	return v
}

// jsonMessage encodes a captured request or response as a jsonb document (nil, NULL, when m is nil). A
// body whose JSON is not valid JSON is kept as text rather than refused.
func jsonMessage(m *event.Message) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	b, err := m.AppendJSON(nil)
	if err != nil && m.Body != nil && len(m.Body.JSON) > 0 {
		body := *m.Body
		body.Text, body.JSON = string(body.JSON), nil
		copied := *m
		copied.Body = &body
		b, err = copied.AppendJSON(nil)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// jsonAttrs encodes attributes as a jsonb document (nil, NULL, when there are none). An attribute whose
// value JSON cannot encode (a NaN, a channel, a failing MarshalJSON) is kept as its fmt %v text.
func jsonAttrs(attrs map[string]any) ([]byte, error) {
	if len(attrs) == 0 {
		return nil, nil
	}
	b, err := event.AppendAttrsJSON(nil, attrs)
	if err != nil {
		fixed := make(map[string]any, len(attrs))
		for k, v := range attrs {
			if _, err := json.Marshal(v); err != nil {
				v = fmt.Sprintf("%v", v)
			}
			fixed[k] = v
		}
		b, err = event.AppendAttrsJSON(nil, fixed)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Columns returns the application_logs columns that Row fills, in the order of its values: with Row,
// what a COPY of events into the table needs (the benchmarks' raw CopyFrom ceiling writes the very
// rows the sink writes).
func Columns() []string { return append([]string(nil), columnNames...) }

// Row returns an event's row as the sink writes it, in the order of Columns: text made safe for
// PostgreSQL, NULL for empty optional fields, the nested parts as jsonb. It fails for an event the
// sink refuses (see Write).
func Row(e *event.Event) ([]any, error) {
	r, err := makeRow(e)
	if err != nil {
		return nil, err
	}
	return r.values(), nil
}

// Rows returns the events' rows, in order, as Row makes each: what a COPY into Columns takes. It
// fails at the first event the sink refuses.
func Rows(events []*event.Event) ([][]any, error) {
	rows := make([][]any, len(events))
	for i, e := range events {
		r, err := Row(e)
		if err != nil {
			return nil, err
		}
		rows[i] = r
	}
	return rows, nil
}
