package publishers

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// httpLogger is a validated Config, compiled for the request path.
type httpLogger struct {
	cfg             Config
	redact          *redact.Redactor
	sample          *sampler
	body            bodyOptions
	reqLimit        int // 0: request bodies are not captured
	respLimit       int // 0: response bodies are not captured
	requestIDHeader string
}

// outcome is how the handler chain below the middleware ended.
type outcome struct {
	err      error // returned by the handler (already handed to c.Error), or the panic as an error
	panicked bool
	stack    []byte
}

// middleware logs one event per request.
//
// Errors: a handler's error is handed to c.Error (the host's HTTPErrorHandler) before the status is
// read, so the event has the status the client received, and the middleware then returns nil so that
// the error handler does not run twice.
//
// Panics: the middleware recovers, publishes an ERROR event with the panic and its stack, and panics
// again with the same value, so that an outer Recover (or net/http) behaves as without sluice. If the
// response was not committed before the panic, the event's status is 500: what Echo's Recover (through
// the error handler) sends. Without an outer Recover, net/http drops the connection and the client gets
// no status at all; the event still says 500.
func (m *httpLogger) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if m.cfg.Skipper(c) {
			return next(c)
		}
		ev, start := event.NewTimed(event.LevelInfo, event.KindHTTP, "") // one clock read for the event and the duration
		req, res := c.Request(), c.Response()

		corr := Correlation{RequestID: headerValue(req.Header, m.requestIDHeader)}
		if !validRequestID(corr.RequestID) {
			corr.RequestID = headerValue(res.Header(), m.requestIDHeader) // set by an outer RequestID middleware
			if !validRequestID(corr.RequestID) {
				corr.RequestID = m.newRequestID(ev)
			}
		}
		res.Header()[m.requestIDHeader] = []string{corr.RequestID} // Header.Set without canonicalizing a canonical key
		if tp := headerValue(req.Header, "Traceparent"); tp != "" {
			corr.TraceID, corr.SpanID, _ = parseTraceparent(tp)
		}
		ctx := newCorrelationContext(req.Context(), corr)
		req = req.WithContext(ctx)
		var reqBody *requestBody
		if m.reqLimit > 0 && req.Body != nil && req.Body != http.NoBody {
			reqBody = newRequestBody(req, m.reqLimit)
			req.Body = reqBody
		}
		c.SetRequest(req)
		rw := &responseBody{ResponseWriter: res.Writer, limit: m.respLimit, timeout: m.cfg.ResponseBodyTimeout}
		res.Writer = rw

		done := false
		defer func() {
			if done {
				return
			}
			r := recover()
			res.Writer = rw.ResponseWriter
			if r == nil { // runtime.Goexit: nothing to log, nothing to re-panic
				return
			}
			o := outcome{panicked: true}
			if err, ok := r.(error); ok {
				o.err = err
			} else {
				o.err = fmt.Errorf("%v", r)
			}
			if !errors.Is(o.err, http.ErrAbortHandler) {
				o.stack = debug.Stack()
				if len(o.stack) > m.cfg.Limits.MaxStackBytes {
					o.stack = o.stack[:m.cfg.Limits.MaxStackBytes]
				}
			}
			m.finish(c, start, ev, ctx, reqBody, rw, o)
			panic(r)
		}()

		err := next(c)
		if err != nil {
			c.Error(err) // writes the error response (through rw, so that its body is captured)
		}
		done = true
		res.Writer = rw.ResponseWriter
		m.finish(c, start, ev, ctx, reqBody, rw, outcome{err: err})
		return nil
	}
}

func (m *httpLogger) newRequestID(ev *event.Event) string {
	if m.cfg.RequestIDGenerator != nil {
		if id := m.cfg.RequestIDGenerator(); validRequestID(id) {
			return id
		}
	}
	return ev.ID.String()
}

// finish completes the event of a request and publishes it, unless sampling keeps it out.
func (m *httpLogger) finish(c echo.Context, start time.Time, ev *event.Event, ctx *correlationContext, reqBody *requestBody, rw *responseBody, o outcome) {
	corr := ctx.c
	duration := time.Since(start) // before topUp: the event times the handler, not the capture
	req, res := c.Request(), c.Response()
	status := res.Status
	switch {
	case rw.hijacked && isUpgrade(req):
		status = http.StatusSwitchingProtocols
	case o.panicked && !res.Committed:
		status = http.StatusInternalServerError
	}
	level := m.cfg.Levels(status, o.err, o.panicked)
	route := c.Path()
	if level != event.LevelWarn && level != event.LevelError && !m.sample.keep(req.Method, route, corr.RequestID) {
		if m.cfg.Counters != nil {
			m.cfg.Counters.SampledOut(route)
		}
		return
	}

	r, lim := m.redact, &m.cfg.Limits
	ev.Level = level
	ev.Service = m.cfg.Service
	ev.RequestID, ev.TraceID, ev.SpanID = event.SafeString(corr.RequestID), corr.TraceID, corr.SpanID
	ev.Method = cut(event.SafeString(req.Method), maxMethodBytes)
	ev.Route = event.SafeString(route)
	ev.Path = cut(event.SafeString(r.Path(req.URL.Path)), lim.MaxPathBytes)
	ev.Status = status
	ev.ClientIP = cut(event.SafeString(c.RealIP()), maxClientIPBytes)
	ev.UserAgent = cut(r.Text(event.SafeString(headerValue(req.Header, "User-Agent"))), lim.MaxUserAgentBytes)
	ev.BytesOut = res.Size
	if o.err != nil {
		msg := o.err.Error()
		if o.panicked {
			msg = "panic: " + msg
		}
		ev.Error = cut(r.Text(event.SafeString(msg)), lim.MaxErrorBytes)
	}
	shown := ev.Route
	if shown == "" {
		shown = ev.Path
	}
	var digits [20]byte // the status on the stack: the concatenation is the one allocation
	ev.Message = ev.Method + " " + shown + " " + string(strconv.AppendInt(digits[:0], int64(status), 10))

	parts := new(httpParts)
	ev.Request = &parts.req
	ev.Request.Query = cut(event.SafeString(r.Query(req.URL.RawQuery)), lim.MaxQueryBytes)
	copyHeaders(ev.Request, req.Header, r, lim)
	ev.BytesIn = max(req.ContentLength, 0)
	if reqBody != nil {
		if !rw.hijacked {
			reqBody.topUp(m.cfg.RequestBodyTimeout)
		}
		content, size, truncated, timedOut := reqBody.captured()
		ev.BytesIn = size
		ev.Request.Body = buildBody(&parts.reqBody, content, size, truncated, timedOut,
			headerValue(req.Header, echo.HeaderContentType), headerValue(req.Header, echo.HeaderContentEncoding), &m.body)
	}
	ev.Response = &parts.res
	copyHeaders(ev.Response, res.Header(), r, lim)
	if m.respLimit > 0 && !rw.hijacked {
		h := res.Header()
		ev.Response.Body = buildBody(&parts.resBody, rw.buf, res.Size, res.Size > int64(len(rw.buf)), rw.timedOut,
			headerValue(h, echo.HeaderContentType), headerValue(h, echo.HeaderContentEncoding), &m.body)
	}
	if o.panicked || rw.hijacked {
		ev.Attrs = make(map[string]any, 2)
		if o.panicked {
			ev.Attrs["panic"] = true
		}
		if len(o.stack) > 0 {
			ev.Attrs["stack"] = r.Text(event.SafeBytes(o.stack, true))
		}
		if rw.hijacked {
			ev.Attrs["hijacked"] = true
		}
	}
	ev.DurationMS = float64(duration.Nanoseconds()) / 1e6
	publish(&ctx.detached, m.cfg.Publisher, m.cfg.Counters, SourceHTTP, ev)
}

// Bounds of the fields that Limits does not name: a method is a short token, and a client address is
// an IP address (but X-Forwarded-For and X-Real-IP are whatever the client sends).
const (
	maxMethodBytes   = 64
	maxClientIPBytes = 256
)

// httpParts holds the request and response parts of an HTTP event and room for their bodies: one
// allocation where separate ones take up to four.
type httpParts struct {
	req, res         event.Message
	reqBody, resBody event.Body
}

// headerValue is h.Get(key) for a key already in canonical form: it skips Get's canonicalization.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// isUpgrade reports whether a request asks to switch protocols (a websocket handshake).
func isUpgrade(r *http.Request) bool {
	if r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}
