package publishers

import (
	"context"
	"strings"
	"time"
)

// Correlation is what ties an application log record to the request it was written for.
type Correlation struct {
	RequestID string // X-Request-ID, incoming or generated
	TraceID   string // W3C trace-id (32 lower-case hex digits), when the request carried a traceparent
	SpanID    string // W3C parent-id (16 lower-case hex digits) of the incoming traceparent
}

type correlationKey struct{}

// correlationContext carries a Correlation in one allocation (a context.WithValue plus a pointer would
// take two); everything else is the parent's. Its detached view, in the same allocation, is the context
// an event is published with: the same values, never cancelled (context.WithoutCancel without the
// allocation), so that a client that went away does not make the Publisher drop its request's event.
type correlationContext struct {
	context.Context
	c        Correlation
	detached detachedContext
}

type detachedContext struct{ of *correlationContext }

func (detachedContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (detachedContext) Done() <-chan struct{}       { return nil }
func (detachedContext) Err() error                  { return nil }
func (d *detachedContext) Value(key any) any        { return d.of.Value(key) }

func (x *correlationContext) Value(key any) any {
	if key == (correlationKey{}) {
		return &x.c
	}
	return x.Context.Value(key)
}

// ContextWithCorrelation returns a context that carries c. The middleware does this for every request;
// use it for work that is not a request (a job, a consumer) so that its logs are correlated too.
func ContextWithCorrelation(ctx context.Context, c Correlation) context.Context {
	return newCorrelationContext(ctx, c)
}

func newCorrelationContext(ctx context.Context, c Correlation) *correlationContext {
	x := &correlationContext{Context: ctx, c: c}
	x.detached.of = x
	return x
}

// CorrelationFromContext returns the Correlation that ctx carries, if any.
func CorrelationFromContext(ctx context.Context) (Correlation, bool) {
	if ctx == nil {
		return Correlation{}, false
	}
	if c, ok := ctx.Value(correlationKey{}).(*Correlation); ok {
		return *c, true
	}
	return Correlation{}, false
}

// maxRequestIDLen bounds an incoming request id; a longer one is replaced by a generated id.
const maxRequestIDLen = 128

// validRequestID reports whether an incoming request id is honoured: 1 to 128 printable ASCII
// characters. Anything else (binary, huge) is replaced so that it cannot pollute logs or headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseTraceparent extracts the trace and parent (span) ids of a W3C traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>"). It returns ok=false for anything malformed, for version ff and for
// all-zero ids, as the W3C Trace Context spec requires. Versions above 00 may carry more fields after
// the flags; those are ignored.
func parseTraceparent(h string) (traceID, spanID string, ok bool) {
	h = strings.TrimSpace(h)
	if len(h) < 55 || h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return "", "", false
	}
	version := h[0:2]
	if !isLowerHex(version) || version == "ff" {
		return "", "", false
	}
	if version == "00" && len(h) != 55 {
		return "", "", false
	}
	if len(h) > 55 && h[55] != '-' {
		return "", "", false
	}
	traceID, spanID = h[3:35], h[36:52]
	if !isLowerHex(traceID) || !isLowerHex(spanID) || !isLowerHex(h[53:55]) {
		return "", "", false
	}
	if allZero(traceID) || allZero(spanID) {
		return "", "", false
	}
	return traceID, spanID, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	return strings.Trim(s, "0") == ""
}
