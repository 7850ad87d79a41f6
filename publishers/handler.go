package publishers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// HandlerOptions configures a Handler.
type HandlerOptions struct {
	// Publisher receives the events. Required.
	Publisher Publisher
	// Level is the lowest level published. Default: slog.LevelInfo. It does not filter what reaches Next,
	// which has its own level.
	Level slog.Leveler
	// Service names the service in every event.
	Service string
	// Next, when set, also receives every record it is enabled for (and the same WithAttrs and
	// WithGroup calls), so that logs still reach, say, a JSON handler on stdout: redacted, and with
	// the request_id (and trace_id) of the context's request added, as the event has them.
	Next slog.Handler
	// AddSource keeps the record's code location in event.Source ("file:line function").
	AddSource bool
	// Counters, when set, counts published and dropped events (source "app").
	Counters Counters
	// Redaction is applied to the message, to every attribute (a secret key's value or group is
	// replaced at any depth; strings and errors are redacted as text) and to what Next receives.
	// Default: the zero redact.Policy.
	Redaction redact.Policy
	// Limits bounds the message and the attributes (MaxMessageBytes, MaxAttrs, MaxAttrValueBytes,
	// MaxAttrsBytes). Default: DefaultLimits.
	Limits Limits
}

// Handler is a slog.Handler that turns records into sluice events of kind "app": attributes and groups
// become the event's Attrs (groups as nested objects), the level is mapped (below INFO: DEBUG, below
// WARN: INFO, below ERROR: WARN, else ERROR), and the request id, trace id and span id come from the
// context (see CorrelationFromContext). A record with a zero time gets the time it is handled: every
// event needs one. Handle never blocks: an event the Publisher refuses is counted as dropped.
type Handler struct {
	opts HandlerOptions
	red  *redact.Redactor
	next slog.Handler
	goas []groupOrAttrs // WithGroup and WithAttrs calls, oldest first; never modified once shared
}

// groupOrAttrs is one WithGroup (group set) or WithAttrs (attrs set, values resolved) call.
type groupOrAttrs struct {
	group string
	attrs []slog.Attr
}

// NewHandler returns a Handler, or an error when opts has no Publisher.
func NewHandler(opts HandlerOptions) (*Handler, error) {
	if opts.Publisher == nil {
		return nil, fmt.Errorf("sluice handler: invalid options: %w", ErrNoPublisher)
	}
	if opts.Level == nil {
		opts.Level = slog.LevelInfo
	}
	opts.Service = event.SafeString(opts.Service)
	opts.Limits = opts.Limits.WithDefaults()
	if err := opts.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("sluice handler: invalid options: Limits: %w", err)
	}
	red, err := opts.Redaction.Compile()
	if err != nil {
		return nil, fmt.Errorf("sluice handler: invalid options: %w", err)
	}
	h := &Handler{opts: opts, red: red}
	if opts.Next != nil {
		h.next = redact.NewHandler(opts.Next, red)
	}
	return h, nil
}

// Enabled reports whether the handler publishes records of level, or Next takes them.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.opts.Level.Level() || (h.next != nil && h.next.Enabled(ctx, level))
}

// WithAttrs returns a handler whose events carry attrs (inside the current groups).
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	resolved := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		resolved[i] = slog.Attr{Key: a.Key, Value: a.Value.Resolve()}
	}
	h2 := *h
	h2.goas = append(slices.Clip(h.goas), groupOrAttrs{attrs: resolved})
	if h.next != nil {
		h2.next = h.next.WithAttrs(attrs)
	}
	return &h2
}

// WithGroup returns a handler that puts later attributes in the group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.goas = append(slices.Clip(h.goas), groupOrAttrs{group: name})
	if h.next != nil {
		h2.next = h.next.WithGroup(name)
	}
	return &h2
}

// Handle publishes the record as an event (when its level is enabled) and passes it to Next (when Next
// is enabled for it). It returns Next's error; a dropped event is counted, not returned.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var err error
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		nr := r
		if c, ok := CorrelationFromContext(ctx); ok && c.RequestID != "" { // the copy is correlated too
			nr = r.Clone()
			nr.AddAttrs(slog.String("request_id", c.RequestID))
			if c.TraceID != "" {
				nr.AddAttrs(slog.String("trace_id", c.TraceID))
			}
		}
		err = h.next.Handle(ctx, nr)
	}
	if r.Level < h.opts.Level.Level() {
		return err
	}
	ev := event.New(appLevel(r.Level), event.KindApp, cut(h.red.Text(event.SafeString(r.Message)), h.opts.Limits.MaxMessageBytes))
	if !r.Time.IsZero() {
		ev.TS = r.Time.UTC()
	}
	ev.Service = h.opts.Service
	if c, ok := CorrelationFromContext(ctx); ok {
		ev.RequestID, ev.TraceID, ev.SpanID = event.SafeString(c.RequestID), c.TraceID, c.SpanID
	}
	if h.opts.AddSource && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		ev.Source = event.SafeString(f.File + ":" + strconv.Itoa(f.Line) + " " + f.Function)
	}
	ev.Attrs = h.attrs(r)
	publish(context.WithoutCancel(ctx), h.opts.Publisher, h.opts.Counters, SourceApp, ev)
	return err
}

// appLevel maps a slog level to an event level.
func appLevel(l slog.Level) event.Level {
	switch {
	case l < slog.LevelInfo:
		return event.LevelDebug
	case l < slog.LevelWarn:
		return event.LevelInfo
	case l < slog.LevelError:
		return event.LevelWarn
	}
	return event.LevelError
}

// attrs builds the event's attributes: the WithAttrs attributes in their groups, then the record's in the
// innermost group, redacted and within the limits. Groups that end up empty are left out. It returns nil
// when there is nothing.
func (h *Handler) attrs(r slog.Record) map[string]any {
	goas := h.goas
	if r.NumAttrs() == 0 {
		for len(goas) > 0 && goas[len(goas)-1].group != "" {
			goas = goas[:len(goas)-1]
		}
	}
	if len(goas) == 0 && r.NumAttrs() == 0 {
		return nil
	}
	b := attrBuilder{red: h.red, lim: &h.opts.Limits}
	root := make(map[string]any, r.NumAttrs()+len(goas))
	cur := root
	for _, g := range goas {
		if g.group != "" {
			child := map[string]any{}
			key := event.SafeString(g.group)
			if h.red.Key(key) {
				b.secretGroup = true // every attribute below a secret group is redacted
			}
			cur[key] = child
			cur = child
			continue
		}
		for _, a := range g.attrs {
			b.add(cur, a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		b.add(cur, a)
		return true
	})
	pruneEmpty(root)
	if b.dropped > 0 {
		root["sluice_attrs_dropped"] = b.dropped
	}
	if len(root) == 0 {
		return nil
	}
	return root
}

// attrBuilder adds a record's attributes within the limits.
type attrBuilder struct {
	red         *redact.Redactor
	lim         *Limits
	n, bytes    int
	dropped     int
	secretGroup bool
}

func (b *attrBuilder) add(m map[string]any, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup && v.Equal(slog.Value{}) {
		return // an empty Attr
	}
	key := event.SafeString(a.Key)
	if v.Kind() == slog.KindGroup {
		attrs := v.Group()
		if len(attrs) == 0 {
			return
		}
		if key != "" && (b.secretGroup || b.red.Key(key)) {
			b.put(m, key, b.red.Replacement())
			return
		}
		sub := m
		if key != "" {
			sub = make(map[string]any, len(attrs))
		}
		for _, ga := range attrs {
			b.add(sub, ga)
		}
		if key != "" && len(sub) > 0 {
			m[key] = sub
		}
		return
	}
	if b.secretGroup || b.red.Key(key) {
		b.put(m, key, b.red.Replacement())
		return
	}
	b.put(m, key, attrValue(v, b.red, b.lim.MaxAttrValueBytes))
}

// put adds one attribute, or counts it as dropped when it would pass MaxAttrs or MaxAttrsBytes.
func (b *attrBuilder) put(m map[string]any, key string, value any) {
	size := len(key)
	switch x := value.(type) {
	case string:
		size += len(x)
	case json.RawMessage:
		size += len(x)
	default:
		size += 8
	}
	if b.n+1 > b.lim.MaxAttrs || b.bytes+size > b.lim.MaxAttrsBytes {
		b.dropped++
		return
	}
	b.n++
	b.bytes += size
	m[key] = value
}

// pruneEmpty removes the groups (nested maps) that hold nothing, reporting whether m is empty.
func pruneEmpty(m map[string]any) bool {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok && pruneEmpty(sub) {
			delete(m, k)
		}
	}
	return len(m) == 0
}

// attrValue converts a resolved, non-group slog value to something that always encodes as JSON that
// PostgreSQL accepts (safe strings, finite numbers, valid JSON for arbitrary values), redacted, and
// within limit bytes (a larger JSON value becomes its cut text).
func attrValue(v slog.Value, red *redact.Redactor, limit int) (out any) {
	switch v.Kind() {
	case slog.KindString:
		return cut(red.Text(event.SafeString(v.String())), limit)
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return v.Uint64()
	case slog.KindFloat64:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		return f
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return int64(v.Duration()) // nanoseconds, as slog.JSONHandler writes them
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	}
	x := v.Any()
	defer func() { // a String or MarshalJSON method that panics (nil receiver) must not lose the record
		if r := recover(); r != nil {
			out = cut(red.Text(event.SafeString(fmt.Sprintf("!PANIC: %v", r))), limit)
		}
	}()
	switch t := x.(type) {
	case nil:
		return nil
	case json.Marshaler:
	case error:
		return cut(red.Text(event.SafeString(t.Error())), limit)
	}
	b, err := json.Marshal(x)
	if err != nil {
		return cut(red.Text(event.SafeString(fmt.Sprintf("%+v", x))), limit)
	}
	if out, ok := rewriteJSON(b, red); ok {
		if len(out) > limit {
			return cut(string(out), limit)
		}
		return json.RawMessage(out)
	}
	return cut(red.Text(event.SafeString(string(b))), limit)
}
