package publishers

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicelog/sluice/redact"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/sluicelog/sluice/event"
)

// discard is a Publisher that accepts everything and keeps nothing: the benchmarks measure the request
// path, not a bus.
var discard = PublisherFunc(func(context.Context, *event.Event) error { return nil })

// json1KiB returns a 1 KiB JSON document of the usual shape (objects, strings, numbers); with a secret,
// it holds a password that redaction replaces.
func json1KiB(secret bool) []byte {
	var b strings.Builder
	b.WriteString(`{"user":{"id":42,"name":"Ada Lovelace","email":"ada@example.com"`)
	if secret {
		b.WriteString(`,"password":"hunter2"`)
	}
	b.WriteString(`},"items":[`)
	for i := 0; b.Len() < 1000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"sku":"SKU-0000","qty":3,"price":19.99,"note":"gift wrap"}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkRequest compares, in one run, a bare Echo handler, Echo's RequestLogger writing JSON through
// slog to io.Discard, and sluice, without bodies (GET) and with 1 KiB JSON request and response bodies.
func BenchmarkRequest(b *testing.B) {
	requestLogger := middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURI: true, LogMethod: true, LogLatency: true, LogRemoteIP: true, LogRequestID: true,
		LogUserAgent: true, LogRoutePath: true, LogError: true, HandleError: true,
		LogValuesFunc: func() func(c echo.Context, v middleware.RequestLoggerValues) error {
			logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
			return func(c echo.Context, v middleware.RequestLoggerValues) error {
				attrs := []slog.Attr{
					slog.String("method", v.Method), slog.String("uri", v.URI), slog.String("route", v.RoutePath),
					slog.Int("status", v.Status), slog.Duration("latency", v.Latency), slog.String("remote_ip", v.RemoteIP),
					slog.String("request_id", v.RequestID), slog.String("user_agent", v.UserAgent),
				}
				if v.Error != nil {
					attrs = append(attrs, slog.String("error", v.Error.Error()))
				}
				logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
				return nil
			}
		}(),
	})
	sluice := WithConfig(Config{Publisher: discard, Service: "bench"})
	sluiceNoCapture := WithConfig(Config{Publisher: discard, Service: "bench", CaptureBodies: CaptureNone})

	for _, mw := range []struct {
		name string
		mw   []echo.MiddlewareFunc
	}{
		{"bare", nil},
		{"echo_request_logger", []echo.MiddlewareFunc{requestLogger}},
		{"sluice", []echo.MiddlewareFunc{sluice}},
		{"sluice_capture_off", []echo.MiddlewareFunc{sluiceNoCapture}},
	} {
		e := echo.New()
		e.Use(mw.mw...)
		e.GET("/users/:id", func(c echo.Context) error { return c.String(200, "ok") })
		e.POST("/users/:id", func(c echo.Context) error {
			body, err := io.ReadAll(c.Request().Body)
			if err != nil {
				return err
			}
			return c.JSONBlob(200, body) // echoes the request
		})

		b.Run(mw.name+"/no_bodies", func(b *testing.B) {
			req := httptest.NewRequest("GET", "/users/42?x=1", nil)
			req.Header.Set("User-Agent", "bench/1.0")
			req.Header.Set("Accept", "*/*")
			b.ReportAllocs()
			for b.Loop() {
				e.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
		for _, body := range []struct {
			name string
			doc  []byte
		}{{"json_1KiB", json1KiB(false)}, {"json_1KiB_redacted", json1KiB(true)}} {
			b.Run(mw.name+"/"+body.name, func(b *testing.B) {
				r := bytes.NewReader(body.doc)
				req := httptest.NewRequest("POST", "/users/42", nil)
				req.Header.Set("User-Agent", "bench/1.0")
				req.Header.Set("Content-Type", "application/json")
				req.ContentLength = int64(len(body.doc))
				b.ReportAllocs()
				for b.Loop() {
					r.Reset(body.doc)
					req.Body = io.NopCloser(r)
					w := httptest.NewRecorder()
					e.ServeHTTP(w, req)
					if w.Code != http.StatusOK {
						b.Fatal(w.Code)
					}
				}
			})
		}
	}
}

// BenchmarkHandler measures the slog handler publishing a record with a few attributes.
func BenchmarkHandler(b *testing.B) {
	h, _ := NewHandler(HandlerOptions{Publisher: discard, Service: "bench"})
	logger := slog.New(h).With("component", "billing")
	ctx := ContextWithCorrelation(context.Background(), Correlation{RequestID: "req-1"})
	b.ReportAllocs()
	for b.Loop() {
		logger.InfoContext(ctx, "charged", "amount", 1999, "currency", "EUR", slog.Group("card", "brand", "visa"))
	}
}

// BenchmarkRewriteJSON measures validating, sanitizing and redacting a 1 KiB JSON body.
func BenchmarkRewriteJSON(b *testing.B) {
	doc := json1KiB(true)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := rewriteJSON(doc, redact.Default); !ok {
			b.Fatal("invalid")
		}
	}
}
