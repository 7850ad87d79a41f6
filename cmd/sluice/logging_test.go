package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// TestEchoFileRequestLogger logs requests from many goroutines at once and checks that the file has one
// whole JSON line per request, with the request's fields, once it is closed.
func TestEchoFileRequestLogger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "requests.ndjson")
	l, err := openRequestLogFile(path, 5*time.Millisecond) // flushes while requests are logged too
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.Use(echoFileRequestLogger(l))
	e.GET("/hello/:name", func(c echo.Context) error { return c.String(http.StatusOK, "hello "+c.Param("name")) })
	e.POST("/fail", func(c echo.Context) error { return echo.NewHTTPError(http.StatusBadRequest, "no \"way\"") })
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })

	const workers, each = 8, 250
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var req *http.Request
				if (w+i)%5 == 0 {
					req = httptest.NewRequest(http.MethodPost, "/fail?x=1", strings.NewReader(`{"a":1}`))
					req.Header.Set("X-Request-ID", "req-1")
				} else {
					req = httptest.NewRequest(http.MethodGet, "/hello/w\u00e9rld", nil)
				}
				req.Header.Set("User-Agent", "test")
				e.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil)) // not logged
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines, fails int
	ids := map[string]bool{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines++
		var line requestLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Bytes())
		}
		if ids[line.ID] || line.ID == "" {
			t.Fatalf("line %d: id %q again", lines, line.ID)
		}
		ids[line.ID] = true
		if line.Time.IsZero() || line.RemoteIP == "" || line.UserAgent != "test" || line.LatencyMS < 0 {
			t.Fatalf("line %d: %s", lines, sc.Bytes())
		}
		switch line.Route {
		case "/hello/:name":
			if line.Status != 200 || line.Level != "INFO" || line.Method != "GET" || line.Path != "/hello/w\u00e9rld" ||
				line.BytesOut != int64(len("hello w\u00e9rld")) || line.RequestID != line.ID {
				t.Fatalf("line %d: %s", lines, sc.Bytes())
			}
		case "/fail":
			fails++
			if line.Status != 400 || line.Level != "WARN" || line.URI != "/fail?x=1" || line.BytesIn != 7 ||
				line.RequestID != "req-1" || !strings.Contains(line.Error, `no "way"`) {
				t.Fatalf("line %d: %s", lines, sc.Bytes())
			}
		default:
			t.Fatalf("line %d: route %q", lines, line.Route)
		}
	}
	if lines != workers*each || fails != workers*each/5 {
		t.Errorf("%d lines (%d of /fail), want %d (%d)", lines, fails, workers*each, workers*each/5)
	}
}
