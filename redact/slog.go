package redact

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
)

// NewHandler returns a slog.Handler that redacts records before next handles them: the message and
// every string value as Text does, and the value of every attribute or group whose key is secret. It
// is what keeps sluice's own logs (errors that quote a request, a connection string) free of secrets.
func NewHandler(next slog.Handler, r *Redactor) slog.Handler {
	if r == nil {
		r = Default
	}
	return &handler{next: next, r: r}
}

type handler struct {
	next slog.Handler
	r    *Redactor
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Text(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.r.Attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.r.Attr(a)
	}
	return &handler{next: h.next.WithAttrs(red), r: h.r}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), r: h.r}
}

// anyText is the text of a value of any type: an error's message, else its JSON (maps, slices and
// structs keep their keys, which Text needs), else its %+v.
func anyText(x any) (s string) {
	defer func() { // a String, Error or MarshalJSON method that panics must not lose the line
		if p := recover(); p != nil {
			s = fmt.Sprintf("!PANIC: %v", p)
		}
	}()
	if err, ok := x.(error); ok {
		return err.Error()
	}
	if b, err := json.Marshal(x); err == nil {
		return string(b)
	}
	return fmt.Sprintf("%+v", x)
}

// Attr returns a redacted with its value replaced when its key is secret, its string value (or its
// error's text, or any other value's JSON) redacted as Text does, and a group's attributes redacted at every depth.
func (r *Redactor) Attr(a slog.Attr) slog.Attr {
	if r.Key(a.Key) {
		return slog.String(a.Key, r.repl)
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := r.Text(v.String()); s != v.String() {
			return slog.String(a.Key, s)
		}
	case slog.KindGroup:
		attrs := v.Group()
		red := make([]slog.Attr, len(attrs))
		for i, ga := range attrs {
			red[i] = r.Attr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	case slog.KindAny:
		return slog.String(a.Key, r.Text(anyText(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}
