package publishers

import (
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicelog/sluice/redact"

	"github.com/labstack/echo/v4"
)

func TestHeaderRedaction(t *testing.T) {
	tests := []struct {
		name      string
		redaction redact.Policy
		want      map[string]string // header -> value in the event (request and response)
	}{
		{name: "default deny-list", want: map[string]string{
			"Authorization": redact.DefaultReplacement, "Proxy-Authorization": redact.DefaultReplacement, "Cookie": redact.DefaultReplacement,
			"X-Api-Key": redact.DefaultReplacement, "Set-Cookie": redact.DefaultReplacement, "Accept": "text/plain", "X-Custom": "c",
		}},
		{name: "custom deny-list", redaction: redact.Policy{Headers: []string{"x-custom"}, Replacement: "***"}, want: map[string]string{
			"Authorization": "***", "X-Custom": "***", "Accept": "text/plain", "Set-Cookie": "***",
		}},
		{name: "no redaction", redaction: redact.Policy{Keys: []string{}, Words: []string{}, NoValueDetectors: true}, want: map[string]string{
			"Authorization": "Bearer t", "Cookie": "a=b",
		}},
		{name: "allow-list", redaction: redact.Policy{AllowHeaders: []string{"accept", "Content-Type"}}, want: map[string]string{
			"Accept": "text/plain", "Content-Type": "text/plain; charset=UTF-8", "X-Custom": redact.DefaultReplacement,
			"Authorization": redact.DefaultReplacement, "User-Agent": redact.DefaultReplacement,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := newEcho(t, Config{Redaction: tt.redaction}, func(e *echo.Echo) {
				e.GET("/", func(c echo.Context) error {
					c.Response().Header().Set("Set-Cookie", "s=1")
					return c.String(200, "ok")
				})
			})
			req := httptest.NewRequest("GET", "/", nil)
			for k, v := range map[string]string{"Authorization": "Bearer t", "Proxy-Authorization": "Basic x",
				"Cookie": "a=b", "X-API-Key": "k", "Accept": "text/plain", "X-Custom": "c", "User-Agent": "ua"} {
				req.Header.Set(k, v)
			}
			serve(e, req)
			ev := rec.one(t)
			for h, want := range tt.want {
				got, ok := ev.Request.Headers[h]
				if !ok {
					got, ok = ev.Response.Headers[h]
				}
				if !ok || len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestQueryRedaction(t *testing.T) {
	tests := []struct {
		raw, want string
		keys      []string
	}{
		{"a=1&b=2", "a=1&b=2", nil},
		{"password=hunter2", "password=[REDACTED]", nil},
		{"a=1&TOKEN=x&b=2", "a=1&TOKEN=[REDACTED]&b=2", nil},
		{"api%5Fkey=x&q=go", "api%5Fkey=[REDACTED]&q=go", nil},
		{"secret&x=1", "secret&x=1", nil},
		{"a=1&&access_token=x&", "a=1&&access_token=[REDACTED]&", nil},
		{"qq=x&page=2", "qq=[REDACTED]&page=2", []string{"qq"}},
		{"password=x", "password=x", []string{}},
	}
	for _, tt := range tests {
		r := redact.Default
		if tt.keys != nil {
			r, _ = redact.Policy{Keys: tt.keys, Words: []string{}}.Compile()
		}
		if got := r.Query(tt.raw); got != tt.want {
			t.Errorf("Query(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}

	e, rec := newEcho(t, Config{}, func(e *echo.Echo) { e.GET("/", func(c echo.Context) error { return nil }) })
	serve(e, httptest.NewRequest("GET", "/?user=ada&Password=p&refresh_token=r", nil))
	if got := rec.one(t).Request.Query; got != "user=ada&Password=[REDACTED]&refresh_token=[REDACTED]" {
		t.Errorf("query in the event: %q", got)
	}
}

func TestBodyRedaction(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		cfg         Config
		wantJSON    string
		wantText    string
	}{
		{name: "top level and nested, any case", contentType: "application/json",
			body:     `{"user":"ada","Password":"p","meta":{"TOKEN":{"x":1},"list":[{"cvv":123},{"ok":true}]},"credit_card":null}`,
			wantJSON: `{"user":"ada","Password":"[REDACTED]","meta":{"TOKEN":"[REDACTED]","list":[{"cvv":"[REDACTED]"},{"ok":true}]},"credit_card":"[REDACTED]"}`},
		{name: "escaped key", contentType: "application/json", body: `{"pass\u0077ord":"p"}`,
			wantJSON: `{"pass\u0077ord":"[REDACTED]"}`},
		{name: "keys as values are kept", contentType: "application/json", body: `["password",{"k":"secret"}]`,
			wantJSON: `["password",{"k":"secret"}]`},
		{name: "truncated json: redacted as text", contentType: "application/json", cfg: Config{RequestBodyLimit: 40},
			body:     `{"a":1,"token": "abcdef", "secret":"0123456789012345", "b": 2}`,
			wantText: `{"a":1,"token": "[REDACTED]", "secret":"[REDACTED]`},
		{name: "invalid json: redacted as text", contentType: "application/json",
			body: `{"password": hunter2, "x": [1,}`, wantText: `{"password": [REDACTED], "x": [1,}`},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: "user=ada&password=p&cvv=1",
			wantText: "user=ada&password=[REDACTED]&cvv=[REDACTED]"},
		{name: "custom keys and replacement", contentType: "application/json",
			cfg:  Config{Redaction: redact.Policy{Keys: []string{"ssn"}, Words: []string{}, Replacement: `"x"`}},
			body: `{"ssn":"1","password":"p"}`, wantJSON: `{"ssn":"\"x\"","password":"p"}`},
		{name: "no body redaction", contentType: "application/json", cfg: Config{Redaction: redact.Policy{Keys: []string{}, Words: []string{}}},
			body: `{"password":"p"}`, wantJSON: `{"password":"p"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := newEcho(t, tt.cfg, func(e *echo.Echo) {
				e.POST("/", func(c echo.Context) error { return c.Blob(200, tt.contentType, []byte(tt.body)) })
			})
			req := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			serve(e, req)
			ev := rec.one(t)
			for _, b := range []struct {
				name string
				json string
				text string
			}{{"request", string(ev.Request.Body.JSON), ev.Request.Body.Text}, {"response", string(ev.Response.Body.JSON), ev.Response.Body.Text}} {
				if b.name == "response" && tt.cfg.RequestBodyLimit != 0 {
					continue // the limit is the request's
				}
				if b.json != tt.wantJSON || b.text != tt.wantText {
					t.Errorf("%s body: json %s text %q\nwant json %s text %q", b.name, b.json, b.text, tt.wantJSON, tt.wantText)
				}
			}
		})
	}
}

func TestSanitizing(t *testing.T) {
	e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
		e.POST("/*", func(c echo.Context) error {
			c.Response().Header().Set("X-Out", "o\xffut")
			return c.Blob(200, "text/plain", []byte("resp\x00onse\xfe"))
		})
	})
	req := httptest.NewRequest("POST", "/p%00a%FFth?q=%00&r=\xff", strings.NewReader(`{"k\u0000":"v\ud800 `+"\xff"+`","ok":"\ud83d\ude00"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header["X-Bad\xff"] = []string{"va\x00lue\xc3"}
	req.Header.Set("User-Agent", "agent\xff")
	req.Header.Set(echo.HeaderXRealIP, "1.2.3.4\x00")
	serve(e, req)
	ev := rec.one(t) // checks the encoding is safe

	if ev.Path != "/p\uFFFDa\uFFFDth" {
		t.Errorf("path %q", ev.Path)
	}
	if ev.Request.Query != "q=%00&r=\uFFFD" {
		t.Errorf("query %q", ev.Request.Query)
	}
	if got := ev.Request.Headers["X-Bad\uFFFD"]; !reflect.DeepEqual(got, []string{"va\uFFFDlue\uFFFD"}) {
		t.Errorf("header %q (all: %q)", got, ev.Request.Headers)
	}
	if ev.UserAgent != "agent\uFFFD" || ev.ClientIP != "1.2.3.4\uFFFD" {
		t.Errorf("user agent %q, client ip %q", ev.UserAgent, ev.ClientIP)
	}
	if got := string(ev.Request.Body.JSON); got != `{"k\ufffd":"v\ufffd \ufffd","ok":"\ud83d\ude00"}` {
		t.Errorf("json body %s", got)
	}
	if ev.Response.Body.Text != "resp\uFFFDonse\uFFFD" || ev.Response.Headers["X-Out"][0] != "o\uFFFDut" {
		t.Errorf("response %q %q", ev.Response.Body.Text, ev.Response.Headers["X-Out"])
	}
}

// The redacting JSON rewriter (event.SafeJSON with the Redactor; event's tests cover the scanner
// itself) costs no allocation when nothing changes.
func TestRewriteJSONKeepsCleanInput(t *testing.T) {
	in := []byte(`{"a":"b","c":[1,2,3],"a_key_longer_than_32_bytes_xxxxxxxxxxxx":1}`)
	if n := testing.AllocsPerRun(100, func() { _, _ = rewriteJSON(in, redact.Default) }); n != 0 {
		t.Errorf("rewriteJSON allocates %v times when nothing changes", n)
	}
	if out, ok := rewriteJSON(in, redact.Default); !ok || &out[0] != &in[0] {
		t.Errorf("rewriteJSON copied a document that needed no change")
	}
}

func TestSampling(t *testing.T) {
	t.Run("rules", func(t *testing.T) {
		c := newCounts()
		cfg := Config{Counters: c, Sampling: Sampling{Rules: []SampleRule{
			{Route: "/healthz", Rate: 0},
			{Route: "/static/*", Rate: 0},
			{Route: "/users/:id", Method: "get", Rate: 0},
		}}}
		e, rec := newEcho(t, cfg, func(e *echo.Echo) {
			ok := func(c echo.Context) error { return c.NoContent(200) }
			e.GET("/healthz", ok)
			e.GET("/static/:file", ok)
			e.GET("/users/:id", func(c echo.Context) error {
				if c.Param("id") == "0" {
					return echo.ErrNotFound
				}
				if c.Param("id") == "boom" {
					return echo.ErrInternalServerError
				}
				return c.NoContent(200)
			})
			e.PUT("/users/:id", ok)
			e.GET("/other", ok)
		})
		for _, r := range []struct {
			method, path string
			kept         bool
		}{
			{"GET", "/healthz", false}, {"GET", "/static/a.css", false}, {"GET", "/users/1", false},
			{"GET", "/users/0", true}, {"GET", "/users/boom", true}, // WARN and ERROR are never sampled out
			{"PUT", "/users/1", true}, {"GET", "/other", true},
		} {
			before := len(rec.all())
			serve(e, httptest.NewRequest(r.method, r.path, nil))
			if kept := len(rec.all()) > before; kept != r.kept {
				t.Errorf("%s %s kept %v, want %v", r.method, r.path, kept, r.kept)
			}
		}
		want := map[string]int{"/healthz": 1, "/static/:file": 1, "/users/:id": 1}
		if !reflect.DeepEqual(c.sampled, want) {
			t.Errorf("sampled out %v, want %v", c.sampled, want)
		}
	})
	t.Run("deterministic by request id", func(t *testing.T) {
		s, err := Sampling{Rules: []SampleRule{{Route: "/a", Rate: 0.25}}}.compile()
		if err != nil {
			t.Fatal(err)
		}
		kept := 0
		for i := range 4000 {
			id := "req-" + strconv.Itoa(i)
			k := s.keep("GET", "/a", id)
			if k != s.keep("GET", "/a", id) {
				t.Fatal("the same request id gave two decisions")
			}
			if k {
				kept++
			}
		}
		if kept < 850 || kept > 1150 {
			t.Errorf("kept %d of 4000 at rate 0.25", kept)
		}
	})
}

func TestApplicationLogsCarryTheRequestIDs(t *testing.T) {
	rec := &recorder{}
	h, _ := NewHandler(HandlerOptions{Publisher: rec})
	logger := slog.New(h)
	e, _ := newEcho(t, Config{Publisher: rec}, func(e *echo.Echo) {
		e.GET("/", func(c echo.Context) error {
			logger.InfoContext(c.Request().Context(), "inside")
			return nil
		})
	})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	serve(e, req)
	evs := rec.all()
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	app, http := evs[0], evs[1]
	if app.Kind != "app" || http.Kind != "http" || app.RequestID == "" || app.RequestID != http.RequestID ||
		app.TraceID != http.TraceID || app.SpanID != http.SpanID || app.TraceID == "" {
		t.Errorf("app %s/%s/%s, http %s/%s/%s", app.RequestID, app.TraceID, app.SpanID, http.RequestID, http.TraceID, http.SpanID)
	}
}
