package publishers

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicelog/sluice/redact"

	"github.com/labstack/echo/v4"
	"github.com/sluicelog/sluice/event"
)

// FuzzBodyCapture sends arbitrary bodies, content types and limits through the middleware: the handler
// must read the body unchanged, the client must get it back unchanged, and the event must say the right
// size, be truncated exactly when the body is longer than the limit, never show a redacted key's value,
// and encode as JSON that PostgreSQL accepts.
func FuzzBodyCapture(f *testing.F) {
	f.Add([]byte(`{"user":"ada","password":"hunter2"}`), "application/json", uint16(64))
	f.Add([]byte(`{"a":[1,2,{"token":"x"}]}`), "application/json", uint16(10))
	f.Add([]byte("user=ada&password=p"), "application/x-www-form-urlencoded", uint16(100))
	f.Add([]byte("h\xe9llo\x00 w\xf0\x9f\x98orld"), "text/plain; charset=utf-8", uint16(9))
	f.Add([]byte(`{"k\u0000":"\ud800"}`), "", uint16(0))
	f.Add([]byte("\x89PNG\r\n\x1a\n\x00\x00"), "image/png", uint16(4))
	f.Add([]byte(`[`+strings.Repeat(`{"secret":[`, 30)), "application/problem+json", uint16(200))
	f.Fuzz(func(t *testing.T, body []byte, contentType string, limit uint16) {
		cfg := Config{RequestBodyLimit: int(limit%512) + 1, ResponseBodyLimit: int(limit%300) + 1, Base64Bodies: limit%2 == 0}
		var seen []byte
		e, rec := newEcho(t, cfg, func(e *echo.Echo) {
			e.POST("/", func(c echo.Context) error {
				var err error
				seen, err = io.ReadAll(c.Request().Body)
				if err != nil {
					return err
				}
				return c.Blob(200, contentType, seen)
			})
		})
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		if contentType != "" {
			req.Header["Content-Type"] = []string{contentType}
		}
		w := serve(e, req)
		if !bytes.Equal(seen, body) || !bytes.Equal(w.Body.Bytes(), body) {
			t.Fatalf("the body changed on its way: handler %q, client %q, sent %q", seen, w.Body.Bytes(), body)
		}
		ev := rec.one(t) // checks the encoding is safe
		for _, m := range []struct {
			name  string
			limit int
			msg   bodyView
		}{{"request", cfg.RequestBodyLimit, bodyOf(ev.Request)}, {"response", cfg.ResponseBodyLimit, bodyOf(ev.Response)}} {
			if len(body) == 0 {
				if m.msg.present {
					t.Fatalf("%s: a body for an empty one", m.name)
				}
				continue
			}
			if m.msg.size != int64(len(body)) || m.msg.truncated != (len(body) > m.limit) {
				t.Fatalf("%s: size %d truncated %v, want %d %v", m.name, m.msg.size, m.msg.truncated, len(body), len(body) > m.limit)
			}
			if len(m.msg.json) > 0 {
				checkRedactedJSON(t, m.msg.json)
			}
		}
	})
}

type bodyView struct {
	present   bool
	size      int64
	truncated bool
	json      []byte
}

func bodyOf(m *event.Message) bodyView {
	if m == nil || m.Body == nil {
		return bodyView{}
	}
	return bodyView{present: true, size: m.Body.Size, truncated: m.Body.Truncated, json: m.Body.JSON}
}

// FuzzHeaderCapture puts arbitrary header names and values, paths, queries and request ids (bytes a
// server would reject too: the middleware must not rely on it) into a request: the event must encode as
// JSON that PostgreSQL accepts, with the redacted headers redacted.
func FuzzHeaderCapture(f *testing.F) {
	f.Add("X-Custom", "value", "/path", "a=1", "req-1")
	f.Add("Authorization", "Bearer \xff\x00", "/p\x00th", "password=x&y=\xfe", "\x00")
	f.Add("X-Bad\xff", "v\xc3", "/\xed\xa0\x80", "%00=%ff", strings.Repeat("r", 200))
	f.Add("cookie", "a=b", "", "", "")
	f.Fuzz(func(t *testing.T, name, value, path, query, requestID string) {
		e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
			e.Any("/*", func(c echo.Context) error {
				c.Response().Header()[name] = []string{value}
				return c.NoContent(200)
			})
		})
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path, req.URL.RawQuery = "/"+path, query
		req.Header[name] = []string{value}
		req.Header[echo.HeaderXRequestID] = []string{requestID}
		w := serve(e, req)
		ev := rec.one(t)
		if got := w.Header().Get(echo.HeaderXRequestID); got != ev.RequestID || !validRequestID(got) {
			t.Fatalf("request id: response %q, event %q", got, ev.RequestID)
		}
		if validRequestID(requestID) && ev.RequestID != requestID {
			t.Fatalf("a valid request id %q was not honoured: %q", requestID, ev.RequestID)
		}
		for _, h := range []map[string][]string{ev.Request.Headers, ev.Response.Headers} {
			for k, vs := range h {
				if redact.Default.Header(k) && (len(vs) != 1 || vs[0] != redact.DefaultReplacement) {
					t.Fatalf("header %q not redacted: %q", k, vs)
				}
			}
		}
	})
}

// FuzzRewriteJSON checks the JSON rewriter against encoding/json: it accepts exactly the valid
// documents (up to its depth limit), and what it returns is valid JSON, valid UTF-8, free of the escapes
// PostgreSQL rejects, and has every listed key's value redacted.
func FuzzRewriteJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"password":"x","a":[{"Token":1}]}`, `"\u0000\ud800\udc00"`, "\"\xff\"", `[1,2`, `-0.1e5`, `{"a":}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, ok := rewriteJSON(in, redact.Default)
		deep := bytes.Count(in, []byte("["))+bytes.Count(in, []byte("{")) > event.MaxJSONDepth
		if !deep && ok != json.Valid(in) {
			t.Fatalf("rewriteJSON ok=%v, json.Valid=%v for %q", ok, json.Valid(in), in)
		}
		if !ok {
			return
		}
		if !storableJSON(out) {
			t.Fatalf("rewriteJSON(%q) = %q: not storable", in, out)
		}
		checkRedactedJSON(t, out)
	})
}

// checkRedactedJSON fails when a default-redacted key of any object in doc has another value than the
// replacement.
func checkRedactedJSON(t *testing.T, doc []byte) {
	t.Helper()
	var v any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("stored JSON does not decode: %v: %q", err, doc)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				if redact.Default.Key(k) && val != redact.DefaultReplacement {
					t.Fatalf("key %q kept its value %v in %s", k, val, doc)
				}
				walk(val)
			}
		case []any:
			for _, val := range x {
				walk(val)
			}
		}
	}
	walk(v)
}

func ptr[T any](v T) *T { return &v }
