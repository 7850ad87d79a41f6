package publishers

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// A request with a flood of headers and an oversized query, path and user agent, and a handler error
// that is long: every field is cut to its limit and marked, and the whole event stays small.
func TestLimitsBoundEveryCapturedField(t *testing.T) {
	e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
		e.GET("/*", func(c echo.Context) error {
			for i := range 100 {
				c.Response().Header().Add("X-Out", strings.Repeat("o", 1000+i))
			}
			return errors.New(strings.Repeat("e", 20_000))
		})
	})
	req := httptest.NewRequest("GET", "/"+strings.Repeat("p", 5000)+"?q="+strings.Repeat("q", 20_000), nil)
	for i := range 200 {
		req.Header.Add("X-Flood-"+strings.Repeat("n", i%7), strings.Repeat("v", 4800))
	}
	req.Header.Set("User-Agent", strings.Repeat("u", 5000))
	serve(e, req)
	ev := rec.one(t)
	l := DefaultLimits()
	for name, m := range map[string]*event.Message{"request": ev.Request, "response": ev.Response} {
		lines, size := 0, 0
		for k, vs := range m.Headers {
			lines += len(vs)
			for _, v := range vs {
				size += len(k) + len(v)
				if len(v) > l.MaxHeaderValueBytes+64 {
					t.Errorf("%s header %s: %d bytes", name, k, len(v))
				}
			}
		}
		if lines > l.MaxHeaders || size > l.MaxHeaderBytes || m.HeadersDropped == 0 {
			t.Errorf("%s headers: %d lines, %d bytes, %d dropped; want at most %d lines and %d bytes, some dropped",
				name, lines, size, m.HeadersDropped, l.MaxHeaders, l.MaxHeaderBytes)
		}
	}
	for _, f := range []struct {
		name  string
		value string
		limit int
	}{
		{"query", ev.Request.Query, l.MaxQueryBytes}, {"path", ev.Path, l.MaxPathBytes},
		{"user agent", ev.UserAgent, l.MaxUserAgentBytes}, {"error", ev.Error, l.MaxErrorBytes},
	} {
		if len(f.value) > f.limit+64 || !strings.Contains(f.value, "…[cut from ") {
			t.Errorf("%s: %d bytes, want at most %d and a cut marker", f.name, len(f.value), f.limit)
		}
	}
	raw, err := event.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 64<<10 {
		t.Errorf("the event encodes to %d bytes", len(raw))
	}
}

func TestLimitsValidateNamesTheKey(t *testing.T) {
	_, err := Config{Publisher: &recorder{}, Limits: Limits{MaxAttrs: -1}}.ToMiddleware()
	if err == nil || !strings.Contains(err.Error(), "max_attrs (-1)") {
		t.Fatalf("error %v, want one naming max_attrs", err)
	}
}

// The slog handler redacts at every depth of groups, in the message and in errors, bounds the message
// and the attributes, and hands Next a redacted record too.
func TestHandlerRedactsAndBoundsRecords(t *testing.T) {
	const secret = "CANARY-slog-1"
	rec := &recorder{}
	var next bytes.Buffer
	h, err := NewHandler(HandlerOptions{Publisher: rec, Next: slog.NewJSONHandler(&next, nil),
		Limits: Limits{MaxAttrs: 6, MaxMessageBytes: 100}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("session_id", secret).WithGroup("req")
	log.Info("login password="+secret+" "+strings.Repeat("m", 200),
		"password", secret, slog.Group("auth", "user", "ann"), slog.Group("meta", slog.Group("deep", "newPassword", secret, "url", "https://x/?access_token="+secret)),
		"err", errors.New("bad token="+secret), "note", "Bearer "+secret+"abcdefgh", "a", 1, "b", 2, "c", 3)
	ev := rec.one(t)
	raw, _ := event.Encode(ev)
	for what, out := range map[string]string{"event": string(raw), "next": next.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("%s leaks the secret: %s", what, out)
		}
	}
	if !strings.Contains(string(raw), `"sluice_attrs_dropped"`) || len(ev.Message) > 100+64 || !strings.Contains(ev.Message, "…[cut from") {
		t.Errorf("limits not applied: %s", raw)
	}
	if !strings.Contains(string(raw), redact.DefaultReplacement) {
		t.Errorf("nothing replaced: %s", raw)
	}
}
