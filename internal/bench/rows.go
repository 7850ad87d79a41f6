package bench

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sluicelog/sluice/event"
)

// The raw designs of the PostgreSQL scenario (CopyFrom, per-event INSERT) write the same rows as
// pgsink, built here the plain way: no cleaning (the generated text is clean), no deduplication.

// rowColumns are the application_logs columns a row fills, in the order of row's values.
var rowColumns = []string{"id", "ts", "level", "kind", "message", "service", "request_id", "trace_id",
	"span_id", "method", "route", "path", "status", "duration_ms", "client_ip", "user_agent", "bytes_in",
	"bytes_out", "error", "source", "request", "response", "attrs"}

// insertOne is one single-row INSERT of rowColumns.
var insertOne = func() string {
	params := make([]string, len(rowColumns))
	for i := range params {
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	return "INSERT INTO application_logs (" + strings.Join(rowColumns, ", ") + ") VALUES (" +
		strings.Join(params, ", ") + ")"
}()

// row is an event's values in the order of rowColumns: NULL for an empty optional field, the nested
// parts as jsonb.
func row(e *event.Event) ([]any, error) {
	var docs [3]any
	for i, v := range []struct {
		doc  any
		none bool
	}{{e.Request, e.Request == nil}, {e.Response, e.Response == nil}, {e.Attrs, len(e.Attrs) == 0}} {
		if v.none {
			continue
		}
		b, err := json.Marshal(v.doc)
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", e.ID, err)
		}
		docs[i] = b
	}
	text := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	return []any{
		e.ID, e.TS, string(e.Level), string(e.Kind), e.Message,
		text(e.Service), text(e.RequestID), text(e.TraceID), text(e.SpanID),
		text(e.Method), text(e.Route), text(e.Path), number(int32(e.Status)), number(e.DurationMS),
		text(e.ClientIP), text(e.UserAgent), number(e.BytesIn), number(e.BytesOut),
		text(e.Error), text(e.Source), docs[0], docs[1], docs[2],
	}, nil
}

func number[N int32 | int64 | float64](n N) any {
	if n == 0 {
		return nil
	}
	return n
}
