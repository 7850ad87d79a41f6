package publishers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicelog/sluice/redact"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/sluicelog/sluice/event"
)

func TestStatusErrorAndPanic(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name       string
		handler    echo.HandlerFunc
		recover    bool                               // an outer Recover middleware
		errHandler func(err error, c echo.Context)    // a custom HTTPErrorHandler
		wantStatus int                                // the status the client received, and the event's
		wantLevel  event.Level                        //
		wantErr    string                             // substring of the event's Error
		wantPanic  bool                               // the event says it panicked
		wantRaise  bool                               // the panic leaves ServeHTTP (no outer Recover)
		check      func(t *testing.T, e *event.Event) // more checks
	}{
		{name: "ok", handler: func(c echo.Context) error { return c.String(200, "hi") },
			wantStatus: 200, wantLevel: event.LevelInfo},
		{name: "no content", handler: func(c echo.Context) error { return c.NoContent(204) },
			wantStatus: 204, wantLevel: event.LevelInfo},
		{name: "nothing written", handler: func(c echo.Context) error { return nil },
			wantStatus: 200, wantLevel: event.LevelInfo},
		{name: "HTTPError 404", handler: func(c echo.Context) error { return echo.NewHTTPError(404, "no such user") },
			wantStatus: 404, wantLevel: event.LevelWarn, wantErr: "no such user"},
		{name: "HTTPError 503", handler: func(c echo.Context) error { return echo.ErrServiceUnavailable },
			wantStatus: 503, wantLevel: event.LevelError, wantErr: "Service Unavailable"},
		// Echo's default error handler does not unwrap: the client gets 500, so does the event.
		{name: "wrapped HTTPError, default error handler",
			handler:    func(c echo.Context) error { return fmt.Errorf("load: %w", echo.NewHTTPError(403, "denied")) },
			wantStatus: 500, wantLevel: event.LevelError, wantErr: "load: code=403, message=denied"},
		{name: "wrapped HTTPError, unwrapping error handler",
			handler: func(c echo.Context) error { return fmt.Errorf("load: %w", echo.NewHTTPError(403, "denied")) },
			errHandler: func(err error, c echo.Context) {
				var he *echo.HTTPError
				if errors.As(err, &he) {
					_ = c.String(he.Code, "custom")
					return
				}
				_ = c.String(500, "custom")
			},
			wantStatus: 403, wantLevel: event.LevelWarn, wantErr: "denied"},
		{name: "plain error", handler: func(c echo.Context) error { return errBoom },
			wantStatus: 500, wantLevel: event.LevelError, wantErr: "boom"},
		{name: "error after the response was committed",
			handler:    func(c echo.Context) error { _ = c.String(201, "made"); return errBoom },
			wantStatus: 201, wantLevel: event.LevelInfo, wantErr: "boom"},
		{name: "panic, outer Recover", recover: true,
			handler:    func(c echo.Context) error { panic("kaboom") },
			wantStatus: 500, wantLevel: event.LevelError, wantErr: "panic: kaboom", wantPanic: true,
			check: func(t *testing.T, e *event.Event) {
				stack, _ := e.Attrs["stack"].(string)
				if !strings.Contains(stack, "TestStatusErrorAndPanic") {
					t.Errorf("stack does not show the panicking handler:\n%s", stack)
				}
			}},
		{name: "panic with error after commit, outer Recover", recover: true,
			handler:    func(c echo.Context) error { _ = c.NoContent(202); panic(errBoom) },
			wantStatus: 202, wantLevel: event.LevelError, wantErr: "panic: boom", wantPanic: true},
		{name: "panic, no Recover", handler: func(c echo.Context) error { panic(errBoom) },
			wantStatus: 0, wantLevel: event.LevelError, wantErr: "panic: boom", wantPanic: true, wantRaise: true,
			check: func(t *testing.T, e *event.Event) {
				if e.Status != 500 {
					t.Errorf("event status %d, want 500 (documented for a panic before commit)", e.Status)
				}
			}},
		{name: "http.ErrAbortHandler", recover: true, handler: func(c echo.Context) error { panic(http.ErrAbortHandler) },
			wantStatus: 0, wantLevel: event.LevelError, wantErr: "abort Handler", wantPanic: true, wantRaise: true,
			check: func(t *testing.T, e *event.Event) {
				if _, ok := e.Attrs["stack"]; ok {
					t.Error("an aborted handler is not a crash: no stack expected")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var outer []echo.MiddlewareFunc
			if tt.recover {
				outer = append(outer, middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}))
			}
			errCalls := 0
			e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
				e.GET("/x", tt.handler)
				def := e.DefaultHTTPErrorHandler
				if tt.errHandler != nil {
					def = tt.errHandler
				}
				e.HTTPErrorHandler = func(err error, c echo.Context) { errCalls++; def(err, c) }
			}, outer...)
			var raised any
			w := httptest.NewRecorder()
			func() {
				defer func() { raised = recover() }()
				e.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
			}()
			if (raised != nil) != tt.wantRaise {
				t.Fatalf("panic left ServeHTTP: %v, want %v", raised, tt.wantRaise)
			}
			ev := rec.one(t)
			if !tt.wantRaise {
				if w.Code != tt.wantStatus || ev.Status != w.Code {
					t.Errorf("client got %d, event says %d, want %d", w.Code, ev.Status, tt.wantStatus)
				}
			}
			if ev.Level != tt.wantLevel {
				t.Errorf("level %s, want %s", ev.Level, tt.wantLevel)
			}
			if tt.wantErr == "" && ev.Error != "" || !strings.Contains(ev.Error, tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", ev.Error, tt.wantErr)
			}
			if got := ev.Attrs["panic"] == true; got != tt.wantPanic {
				t.Errorf("panic attr %v, want %v", got, tt.wantPanic)
			}
			if errCalls > 1 {
				t.Errorf("the error handler ran %d times", errCalls)
			}
			if want := fmt.Sprintf("GET /x %d", ev.Status); ev.Message != want {
				t.Errorf("message %q, want %q", ev.Message, want)
			}
			if tt.check != nil {
				tt.check(t, ev)
			}
		})
	}
}

func TestEventFields(t *testing.T) {
	e, rec := newEcho(t, Config{Service: "billing"}, func(e *echo.Echo) {
		e.PUT("/users/:id", func(c echo.Context) error {
			return c.JSON(200, map[string]string{"id": c.Param("id")})
		})
	})
	req := httptest.NewRequest("PUT", "/users/42?verbose=1", strings.NewReader(`{"name":"ada"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "probe/1.0")
	req.Header.Set("X-Real-IP", "203.0.113.7")
	w := serve(e, req)
	ev := rec.one(t)

	if ev.Kind != event.KindHTTP || ev.Level != event.LevelInfo || ev.Message != "PUT /users/:id 200" {
		t.Errorf("kind/level/message = %s/%s/%q", ev.Kind, ev.Level, ev.Message)
	}
	for name, got := range map[string][2]string{
		"Service":   {ev.Service, "billing"},
		"Method":    {ev.Method, "PUT"},
		"Route":     {ev.Route, "/users/:id"},
		"Path":      {ev.Path, "/users/42"},
		"ClientIP":  {ev.ClientIP, "203.0.113.7"},
		"UserAgent": {ev.UserAgent, "probe/1.0"},
		"Query":     {ev.Request.Query, "verbose=1"},
		"RequestID": {ev.RequestID, w.Header().Get(echo.HeaderXRequestID)},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %q, want %q", name, got[0], got[1])
		}
	}
	if ev.Status != 200 || ev.BytesIn != 14 || ev.BytesOut != int64(w.Body.Len()) || ev.DurationMS <= 0 {
		t.Errorf("status %d, bytes in %d, out %d (body %d), duration %v", ev.Status, ev.BytesIn, ev.BytesOut, w.Body.Len(), ev.DurationMS)
	}
	if string(ev.Request.Body.JSON) != `{"name":"ada"}` || string(ev.Response.Body.JSON) != `{"id":"42"}`+"\n" {
		t.Errorf("bodies %s / %s", ev.Request.Body.JSON, ev.Response.Body.JSON)
	}
	if ev.Request.Headers["User-Agent"][0] != "probe/1.0" || ev.Response.Headers["Content-Type"][0] != "application/json" {
		t.Errorf("headers %v / %v", ev.Request.Headers, ev.Response.Headers)
	}
	if _, err := uuid.Parse(ev.RequestID); err != nil {
		t.Errorf("generated request id %q is not a UUID: %v", ev.RequestID, err)
	}
}

func TestRequestID(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		name     string
		cfg      Config
		incoming string
		outer    []echo.MiddlewareFunc
		want     string // "" means: a generated id (not the incoming one)
	}{
		{name: "incoming honoured", incoming: "req-123", want: "req-123"},
		{name: "absent: generated"},
		{name: "too long: replaced", incoming: long},
		{name: "with a space: replaced", incoming: "a b"},
		{name: "custom header", cfg: Config{RequestIDHeader: "X-Correlation-Id"}, incoming: "corr-1", want: "corr-1"},
		{name: "custom generator", cfg: Config{RequestIDGenerator: func() string { return "gen-7" }}, want: "gen-7"},
		{name: "from Echo's RequestID middleware", outer: []echo.MiddlewareFunc{middleware.RequestIDWithConfig(
			middleware.RequestIDConfig{Generator: func() string { return "echo-id" }})}, want: "echo-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen Correlation
			e, rec := newEcho(t, tt.cfg, func(e *echo.Echo) {
				e.GET("/", func(c echo.Context) error {
					seen, _ = CorrelationFromContext(c.Request().Context())
					return nil
				})
			}, tt.outer...)
			header := tt.cfg.RequestIDHeader
			if header == "" {
				header = echo.HeaderXRequestID
			}
			req := httptest.NewRequest("GET", "/", nil)
			if tt.incoming != "" {
				req.Header.Set(header, tt.incoming)
			}
			w := serve(e, req)
			ev := rec.one(t)
			got := w.Header().Get(header)
			if got == "" || ev.RequestID != got || seen.RequestID != got {
				t.Fatalf("response %q, event %q, context %q: want all equal and set", got, ev.RequestID, seen.RequestID)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("request id %q, want %q", got, tt.want)
			}
			if tt.want == "" && got == tt.incoming {
				t.Errorf("request id %q was honoured, want a generated one", got)
			}
		})
	}
}

func TestTraceparent(t *testing.T) {
	const (
		trace = "4bf92f3577b34da6a3ce929d0e0e4736"
		span  = "00f067aa0ba902b7"
	)
	tests := []struct {
		header string
		ok     bool
	}{
		{"00-" + trace + "-" + span + "-01", true},
		{" 00-" + trace + "-" + span + "-00 ", true},
		{"01-" + trace + "-" + span + "-01-future", true},
		{"00-" + trace + "-" + span + "-01-extra", false},
		{"ff-" + trace + "-" + span + "-01", false},
		{"00-" + strings.ToUpper(trace) + "-" + span + "-01", false},
		{"00-00000000000000000000000000000000-" + span + "-01", false},
		{"00-" + trace + "-0000000000000000-01", false},
		{"00-" + trace[:31] + "-" + span + "-01", false},
		{"00_" + trace + "-" + span + "-01", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			var seen Correlation
			e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
				e.GET("/", func(c echo.Context) error {
					seen, _ = CorrelationFromContext(c.Request().Context())
					return nil
				})
			})
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Traceparent", tt.header)
			serve(e, req)
			ev := rec.one(t)
			wantTrace, wantSpan := "", ""
			if tt.ok {
				wantTrace, wantSpan = trace, span
			}
			if ev.TraceID != wantTrace || ev.SpanID != wantSpan || seen.TraceID != wantTrace || seen.SpanID != wantSpan {
				t.Errorf("event %s/%s, context %s/%s, want %q/%q", ev.TraceID, ev.SpanID, seen.TraceID, seen.SpanID, wantTrace, wantSpan)
			}
		})
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		status   int
		err      error
		panicked bool
		want     event.Level
	}{
		{200, nil, false, event.LevelInfo},
		{301, nil, false, event.LevelInfo},
		{399, errors.New("x"), false, event.LevelInfo},
		{400, nil, false, event.LevelWarn},
		{499, nil, false, event.LevelWarn},
		{500, nil, false, event.LevelError},
		{599, nil, false, event.LevelError},
		{200, errors.New("x"), true, event.LevelError},
	}
	for _, tt := range tests {
		if got := DefaultLevels(tt.status, tt.err, tt.panicked); got != tt.want {
			t.Errorf("DefaultLevels(%d, %v, %v) = %s, want %s", tt.status, tt.err, tt.panicked, got, tt.want)
		}
	}

	t.Run("custom", func(t *testing.T) {
		cfg := Config{Levels: func(status int, err error, panicked bool) event.Level {
			if status == 404 {
				return event.LevelDebug
			}
			return DefaultLevels(status, err, panicked)
		}}
		e, rec := newEcho(t, cfg, func(e *echo.Echo) {})
		serve(e, httptest.NewRequest("GET", "/missing", nil))
		if ev := rec.one(t); ev.Level != event.LevelDebug || ev.Status != 404 {
			t.Errorf("level %s status %d, want DEBUG 404", ev.Level, ev.Status)
		}
	})
}

type reasonError struct{ reason string }

func (e reasonError) Error() string  { return "not accepted: " + e.reason }
func (e reasonError) Reason() string { return e.reason }

func TestPublishFailuresAreCountedNotFatal(t *testing.T) {
	tests := []struct {
		err    error
		reason string
	}{
		{nil, ""},
		{reasonError{"queue_full"}, "queue_full"},
		{fmt.Errorf("bus: %w", reasonError{"closed"}), "closed"},
		{errors.New("whatever"), ReasonPublishError},
		{reasonError{""}, ReasonPublishError},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			c := newCounts()
			rec := &recorder{err: tt.err}
			e, _ := newEcho(t, Config{Publisher: rec, Counters: c}, func(e *echo.Echo) {
				e.GET("/", func(c echo.Context) error { return c.String(200, "ok") })
			})
			w := serve(e, httptest.NewRequest("GET", "/", nil))
			if w.Code != 200 || w.Body.String() != "ok" {
				t.Fatalf("the request failed: %d %q", w.Code, w.Body)
			}
			if tt.err == nil {
				if c.published[SourceHTTP] != 1 || len(c.dropped) != 0 {
					t.Errorf("published %v dropped %v", c.published, c.dropped)
				}
				return
			}
			if c.dropped[SourceHTTP+"/"+tt.reason] != 1 || len(c.published) != 0 {
				t.Errorf("dropped %v published %v, want one drop for %q", c.dropped, c.published, tt.reason)
			}
		})
	}
}

func TestSkipper(t *testing.T) {
	e, rec := newEcho(t, Config{Skipper: func(c echo.Context) bool { return c.Path() == "/healthz" }}, func(e *echo.Echo) {
		e.GET("/healthz", func(c echo.Context) error { return c.NoContent(200) })
		e.GET("/x", func(c echo.Context) error { return c.NoContent(200) })
	})
	w := serve(e, httptest.NewRequest("GET", "/healthz", nil))
	if len(rec.all()) != 0 || w.Header().Get(echo.HeaderXRequestID) != "" {
		t.Errorf("a skipped request was logged or got a request id")
	}
	serve(e, httptest.NewRequest("GET", "/x", nil))
	rec.one(t)
}

func TestConfig(t *testing.T) {
	p := &recorder{}
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"zero but publisher", Config{Publisher: p}, ""},
		{"no publisher", Config{}, "`Publisher` is required"},
		{"negative request limit", Config{Publisher: p, RequestBodyLimit: -1}, "`RequestBodyLimit` (-1)"},
		{"huge response limit", Config{Publisher: p, ResponseBodyLimit: MaxBodyLimit + 1}, "`ResponseBodyLimit`"},
		{"negative timeout", Config{Publisher: p, RequestBodyTimeout: -1}, "`RequestBodyTimeout`"},
		{"bad capture mode", Config{Publisher: p, CaptureBodies: 9}, "`CaptureBodies` (9)"},
		{"bad header", Config{Publisher: p, RequestIDHeader: "X Id"}, "`RequestIDHeader`"},
		{"bad rate", Config{Publisher: p, Sampling: Sampling{Rules: []SampleRule{{Route: "/a", Rate: 1.5}}}}, "`Sampling.Rules[0].Rate` (1.5)"},
		{"bad pattern", Config{Publisher: p, Sampling: Sampling{Rules: []SampleRule{{Route: "/a["}}}}, "`Sampling.Rules[0].Route`"},
		{"empty header name", Config{Publisher: p, Redaction: redact.Policy{Headers: []string{""}}}, "empty name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.ToMiddleware()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "invalid config") {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			defer func() {
				if recover() == nil {
					t.Error("WithConfig did not panic on an invalid config")
				}
			}()
			WithConfig(tt.cfg)
		})
	}
	d := DefaultConfig()
	if d.RequestBodyLimit != 64<<10 || d.ResponseBodyLimit != 64<<10 || d.RequestBodyTimeout.Seconds() != 2 ||
		d.ResponseBodyTimeout.Seconds() != 3 || d.CaptureBodies != CaptureAll || d.Skipper == nil || d.Levels == nil {
		t.Errorf("DefaultConfig() = %+v", d)
	}
	if !errors.Is(Config{}.Validate(), ErrNoPublisher) {
		t.Error("Validate does not report ErrNoPublisher")
	}
}

// TestPublishContext: the event is published with the request's values but not its cancellation, so a
// client that went away does not make the Publisher refuse the event.
func TestPublishContext(t *testing.T) {
	var got context.Context
	p := PublisherFunc(func(ctx context.Context, _ *event.Event) error { got = ctx; return nil })
	e, _ := newEcho(t, Config{Publisher: p}, func(e *echo.Echo) { e.GET("/", func(c echo.Context) error { return nil }) })
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	cancel()
	req := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
	req.Header.Set(echo.HeaderXRequestID, "r-9")
	serve(e, req)
	if got == nil || got.Err() != nil || got.Done() != nil || got.Value(key{}) != "v" {
		t.Fatalf("publish context %v: err %v, value %v", got, got.Err(), got.Value(key{}))
	}
	if c, ok := CorrelationFromContext(got); !ok || c.RequestID != "r-9" {
		t.Errorf("correlation %+v %v", c, ok)
	}
}
