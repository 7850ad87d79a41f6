package publishers

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sluicelog/sluice/event"
)

// slowBody yields its first part, then blocks until release is closed, then yields the rest.
type slowBody struct {
	first, rest []byte
	release     chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	<-b.release
	if len(b.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func TestRequestBodyCapture(t *testing.T) {
	big := strings.Repeat("x", 100)
	tests := []struct {
		name        string
		body        string
		chunked     bool // unknown length
		contentType string
		read        int // bytes the handler reads: -1 all, 0 none
		cfg         Config
		want        event.Body
	}{
		{name: "json, read by the handler", body: `{"a":[1,2,{"b":null}]}`, contentType: "application/json", read: -1,
			want: event.Body{ContentType: "application/json", Size: 22, JSON: []byte(`{"a":[1,2,{"b":null}]}`)}},
		{name: "json, not read by the handler", body: `{"a":1}`, contentType: "application/json; charset=utf-8", read: 0,
			want: event.Body{ContentType: "application/json; charset=utf-8", Size: 7, JSON: []byte(`{"a":1}`)}},
		{name: "text, truncated, read whole", body: big, contentType: "text/plain", read: -1, cfg: Config{RequestBodyLimit: 10},
			want: event.Body{ContentType: "text/plain", Size: 100, Truncated: true, Text: big[:10]}},
		{name: "text, truncated, read partly", body: big, contentType: "text/plain", read: 3, cfg: Config{RequestBodyLimit: 10},
			want: event.Body{ContentType: "text/plain", Size: 100, Truncated: true, Text: big[:10]}},
		{name: "chunked, truncated, not read", body: big, chunked: true, contentType: "text/plain", read: 0, cfg: Config{RequestBodyLimit: 10},
			want: event.Body{ContentType: "text/plain", Size: 11, Truncated: true, Text: big[:10]}},
		{name: "chunked, read whole", body: big, chunked: true, contentType: "text/plain", read: -1, cfg: Config{RequestBodyLimit: 10},
			want: event.Body{ContentType: "text/plain", Size: 100, Truncated: true, Text: big[:10]}},
		{name: "truncated json becomes text", body: `{"name":"ada","role":"admin"}`, contentType: "application/json", read: -1,
			cfg:  Config{RequestBodyLimit: 12},
			want: event.Body{ContentType: "application/json", Size: 29, Truncated: true, Text: `{"name":"ada`}},
		{name: "invalid json becomes text", body: `{"a":}`, contentType: "application/json", read: -1,
			want: event.Body{ContentType: "application/json", Size: 6, Text: `{"a":}`}},
		{name: "binary: size and type only", body: "\x89PNG\r\n\x1a\n", contentType: "image/png", read: -1,
			want: event.Body{ContentType: "image/png", Size: 8}},
		{name: "binary as base64", body: "\x89PNG\r\n\x1a\n", contentType: "image/png", read: -1, cfg: Config{Base64Bodies: true},
			want: event.Body{ContentType: "image/png", Size: 8, Base64: base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n"))}},
		{name: "no type, looks like json", body: ` [1, 2]`, read: -1,
			want: event.Body{Size: 7, JSON: []byte(` [1, 2]`)}},
		{name: "no type, text", body: "hello", read: -1, want: event.Body{Size: 5, Text: "hello"}},
		{name: "no type, binary", body: "\xff\xfe\x00", read: -1, want: event.Body{Size: 3}},
		{name: "xml is text", body: "<a/>", contentType: "application/soap+xml", read: -1,
			want: event.Body{ContentType: "application/soap+xml", Size: 4, Text: "<a/>"}},
		{name: "capture off", body: "hello", contentType: "text/plain", read: -1, cfg: Config{CaptureBodies: CaptureResponseOnly}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			e, rec := newEcho(t, tt.cfg, func(e *echo.Echo) {
				e.POST("/", func(c echo.Context) error {
					var err error
					switch {
					case tt.read < 0:
						got, err = io.ReadAll(c.Request().Body)
					case tt.read > 0:
						got = make([]byte, tt.read)
						_, err = io.ReadFull(c.Request().Body, got)
					}
					if err != nil {
						return err
					}
					return c.NoContent(204)
				})
			})
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length from httptest.NewRequest
			}
			req := httptest.NewRequest("POST", "/", body)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			w := serve(e, req)
			if w.Code != 204 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if tt.read < 0 && string(got) != tt.body {
				t.Errorf("the handler read %q, want the whole body %q", got, tt.body)
			}
			ev := rec.one(t)
			if ev.Request.Body == nil {
				if tt.want.Size != 0 {
					t.Fatalf("no request body in the event")
				}
				if ev.BytesIn != int64(len(tt.body)) {
					t.Errorf("BytesIn %d, want %d", ev.BytesIn, len(tt.body))
				}
				return
			}
			compareBody(t, ev.Request.Body, &tt.want)
		})
	}
}

func compareBody(t *testing.T, got, want *event.Body) {
	t.Helper()
	if got.ContentType != want.ContentType || got.Size != want.Size || got.Truncated != want.Truncated ||
		got.TimedOut != want.TimedOut || string(got.JSON) != string(want.JSON) || got.Text != want.Text || got.Base64 != want.Base64 {
		t.Errorf("body\n got %+v (json %s)\nwant %+v (json %s)", *got, got.JSON, *want, want.JSON)
	}
}

func TestRequestBodyTimeout(t *testing.T) {
	body := &slowBody{first: []byte("abc"), rest: []byte("def"), release: make(chan struct{})}
	defer close(body.release)
	e, rec := newEcho(t, Config{RequestBodyTimeout: 50 * time.Millisecond}, func(e *echo.Echo) {
		e.POST("/", func(c echo.Context) error { return c.String(200, "ok") }) // does not read the body
	})
	req := httptest.NewRequest("POST", "/", body)
	req.Header.Set("Content-Type", "text/plain")
	req.ContentLength = 6
	start := time.Now()
	w := serve(e, req)
	if w.Code != 200 || w.Body.String() != "ok" {
		t.Fatalf("the request failed: %d %q", w.Code, w.Body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("capture held the request for %v", d)
	}
	ev := rec.one(t)
	compareBody(t, ev.Request.Body, &event.Body{ContentType: "text/plain", Size: 6, Truncated: true, TimedOut: true, Text: "abc"})
}

func TestResponseBodyCapture(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	big := strings.Repeat("y", 50)
	tests := []struct {
		name    string
		handler echo.HandlerFunc
		cfg     Config
		want    *event.Body
	}{
		{name: "json", handler: func(c echo.Context) error { return c.JSONBlob(200, []byte(`{"ok":true}`)) },
			want: &event.Body{ContentType: "application/json", Size: 11, JSON: []byte(`{"ok":true}`)}},
		{name: "text truncated", cfg: Config{ResponseBodyLimit: 8},
			handler: func(c echo.Context) error { return c.String(200, big) },
			want:    &event.Body{ContentType: "text/plain; charset=UTF-8", Size: 50, Truncated: true, Text: big[:8]}},
		{name: "several writes", handler: func(c echo.Context) error {
			c.Response().Header().Set("Content-Type", "text/plain")
			for _, s := range []string{"a", "b", "c"} {
				_, _ = c.Response().Write([]byte(s))
			}
			return nil
		}, want: &event.Body{ContentType: "text/plain", Size: 3, Text: "abc"}},
		{name: "gzip: size only", handler: func(c echo.Context) error {
			c.Response().Header().Set("Content-Encoding", "gzip")
			return c.Blob(200, "application/json", gz(`{"a":1}`))
		}, want: &event.Body{ContentType: "application/json", Size: int64(len(gz(`{"a":1}`)))}},
		{name: "error response is captured", handler: func(c echo.Context) error { return echo.ErrNotFound },
			want: &event.Body{ContentType: "application/json", Size: 24, JSON: []byte(`{"message":"Not Found"}` + "\n")}},
		{name: "empty", handler: func(c echo.Context) error { return c.NoContent(204) }},
		{name: "capture off", cfg: Config{CaptureBodies: CaptureNone},
			handler: func(c echo.Context) error { return c.String(200, "x") }},
		{name: "stream past the capture timeout", cfg: Config{ResponseBodyTimeout: 30 * time.Millisecond},
			handler: func(c echo.Context) error {
				c.Response().Header().Set("Content-Type", "text/event-stream")
				_, _ = c.Response().Write([]byte("data: 1\n\n"))
				c.Response().Flush()
				time.Sleep(60 * time.Millisecond)
				_, _ = c.Response().Write([]byte("data: 2\n\n"))
				return nil
			}, want: &event.Body{ContentType: "text/event-stream", Size: 18, Truncated: true, TimedOut: true, Text: "data: 1\n\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := newEcho(t, tt.cfg, func(e *echo.Echo) { e.GET("/", tt.handler) })
			w := serve(e, httptest.NewRequest("GET", "/", nil))
			ev := rec.one(t)
			if ev.BytesOut != int64(w.Body.Len()) {
				t.Errorf("BytesOut %d, client got %d", ev.BytesOut, w.Body.Len())
			}
			if tt.want == nil {
				if ev.Response.Body != nil {
					t.Errorf("unexpected response body %+v", *ev.Response.Body)
				}
				return
			}
			if ev.Response.Body == nil {
				t.Fatal("no response body in the event")
			}
			compareBody(t, ev.Response.Body, tt.want)
		})
	}
}

func TestResponseWriterKeepsInterfaces(t *testing.T) {
	e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
		e.GET("/", func(c echo.Context) error {
			w := c.Response().Writer
			if _, ok := w.(http.Flusher); !ok {
				t.Error("not an http.Flusher")
			}
			if _, ok := w.(http.Hijacker); !ok {
				t.Error("not an http.Hijacker")
			}
			if u, ok := w.(interface{ Unwrap() http.ResponseWriter }); !ok || u.Unwrap() == nil {
				t.Error("no Unwrap")
			}
			_, _ = c.Response().Write([]byte("a"))
			if err := http.NewResponseController(c.Response()).Flush(); err != nil {
				t.Errorf("flush through ResponseController: %v", err)
			}
			c.Response().Flush()
			return nil
		})
	})
	w := serve(e, httptest.NewRequest("GET", "/", nil))
	if !w.Flushed {
		t.Error("the flush did not reach the underlying writer")
	}
	rec.one(t)
}

// TestRequestBodyTopUpReadsOnlyWhatItMust: no read past a Content-Length the handler reached (a decoder
// that stops at the end of its value never sees EOF), and no read of a body the client sends only after
// "100 Continue" when the handler did not read it.
func TestRequestBodyTopUpReadsOnlyWhatItMust(t *testing.T) {
	tests := []struct {
		name   string
		expect string
		read   int
		want   event.Body
	}{
		{name: "read up to Content-Length", read: 6,
			want: event.Body{ContentType: "text/plain", Size: 6, Text: "abcdef"}},
		{name: "100-continue, not read", expect: "100-continue", read: 0,
			want: event.Body{ContentType: "text/plain", Size: 6, Truncated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &slowBody{first: []byte("abcdef"), release: make(chan struct{})} // blocks after its content
			defer close(body.release)
			e, rec := newEcho(t, Config{RequestBodyTimeout: time.Minute}, func(e *echo.Echo) {
				e.POST("/", func(c echo.Context) error {
					_, err := io.ReadFull(c.Request().Body, make([]byte, tt.read))
					if err != nil {
						return err
					}
					return c.NoContent(204)
				})
			})
			req := httptest.NewRequest("POST", "/", body)
			req.ContentLength = 6
			req.Header.Set("Content-Type", "text/plain")
			if tt.expect != "" {
				req.Header.Set("Expect", tt.expect)
			}
			done := make(chan struct{})
			go func() { serve(e, req); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the capture waited on a body it had no reason to read")
			}
			ev := rec.one(t)
			compareBody(t, ev.Request.Body, &tt.want)
			if tt.expect != "" && len(body.first) != 6 {
				t.Error("the body of a 100-continue request was read")
			}
		})
	}
}
