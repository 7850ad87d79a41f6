package publishers

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sluicelog/sluice/event"
	"golang.org/x/net/websocket"
)

// waitOne waits for the one event of a request served over a socket (the handler may still be returning
// when the client is done).
func waitOne(t *testing.T, rec *recorder) *event.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return rec.one(t)
}

// withAndWithout runs test against an Echo server on a real socket, once with sluice and once without.
func withAndWithout(t *testing.T, routes func(e *echo.Echo), test func(t *testing.T, url string)) (*recorder, bool) {
	t.Helper()
	var rec *recorder
	ok := true
	for _, with := range []bool{false, true} {
		ok = ok && t.Run(fmt.Sprintf("sluice=%v", with), func(t *testing.T) {
			var e *echo.Echo
			if with {
				e, rec = newEcho(t, Config{}, routes)
			} else {
				e = echo.New()
				routes(e)
			}
			srv := httptest.NewServer(e)
			defer srv.Close()
			test(t, srv.URL)
		})
	}
	return rec, ok
}

func TestServerSentEventsOverASocket(t *testing.T) {
	next := make(chan struct{})
	routes := func(e *echo.Echo) {
		e.GET("/events", func(c echo.Context) error {
			w := c.Response()
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(200)
			for i := 1; i <= 3; i++ {
				if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
					return err
				}
				w.Flush()
				select {
				case <-next: // the client got this one before the next is written: it streams
				case <-time.After(5 * time.Second):
					return fmt.Errorf("the client did not get event %d", i)
				}
			}
			return nil
		})
	}
	rec, ok := withAndWithout(t, routes, func(t *testing.T, url string) {
		resp, err := http.Get(url + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
			len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("status %d, type %q, transfer encoding %v", resp.StatusCode, resp.Header.Get("Content-Type"), resp.TransferEncoding)
		}
		r := bufio.NewReader(resp.Body)
		for i := 1; i <= 3; i++ {
			line, err := r.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("event %d: %q, %v", i, line, err)
			}
			if blank, _ := r.ReadString('\n'); blank != "\n" {
				t.Fatalf("event %d not terminated: %q", i, blank)
			}
			next <- struct{}{}
		}
	})
	if !ok {
		return
	}
	ev := waitOne(t, rec)
	if ev.Status != 200 || ev.Response.Body == nil || ev.Response.Body.Text != "data: 1\n\ndata: 2\n\ndata: 3\n\n" {
		t.Errorf("event status %d, response body %+v", ev.Status, ev.Response.Body)
	}
}

func TestWebsocketOverASocket(t *testing.T) {
	routes := func(e *echo.Echo) {
		e.GET("/ws", func(c echo.Context) error {
			websocket.Handler(func(ws *websocket.Conn) {
				for {
					var msg string
					if err := websocket.Message.Receive(ws, &msg); err != nil {
						return
					}
					if err := websocket.Message.Send(ws, "echo: "+msg); err != nil {
						return
					}
				}
			}).ServeHTTP(c.Response(), c.Request())
			return nil
		})
	}
	rec, ok := withAndWithout(t, routes, func(t *testing.T, url string) {
		wsURL := "ws" + strings.TrimPrefix(url, "http") + "/ws"
		ws, err := websocket.Dial(wsURL, "", url)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"one", "two", strings.Repeat("z", 100<<10)} {
			if err := websocket.Message.Send(ws, m); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo: "+m {
				t.Fatalf("got %.40q, %v", got, err)
			}
		}
		if err := ws.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if !ok {
		return
	}
	ev := waitOne(t, rec)
	if ev.Status != http.StatusSwitchingProtocols || ev.Attrs["hijacked"] != true || ev.Level != event.LevelInfo {
		t.Errorf("event status %d, level %s, attrs %v", ev.Status, ev.Level, ev.Attrs)
	}
	if ev.Message != "GET /ws 101" || ev.Response.Body != nil || ev.Request.Headers["Upgrade"][0] != "websocket" {
		t.Errorf("event %q, response body %+v, request headers %v", ev.Message, ev.Response.Body, ev.Request.Headers)
	}
}

// TestRequestBodyOverASocket sends a body larger than the capture limit in chunks over a real
// connection: the handler reads all of it unchanged and the event keeps the first bytes.
func TestRequestBodyOverASocket(t *testing.T) {
	body := strings.Repeat("0123456789", 20<<10) // 200 KiB
	e, rec := newEcho(t, Config{}, func(e *echo.Echo) {
		e.POST("/upload", func(c echo.Context) error {
			b := new(strings.Builder)
			n, err := bufio.NewReader(c.Request().Body).WriteTo(b)
			if err != nil || b.String() != body {
				return fmt.Errorf("handler read %d bytes (%v), not the whole body", n, err)
			}
			return c.String(200, fmt.Sprint(n))
		})
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	pr, pw := newChunkedBody(body, 7<<10)
	defer pr.Close()
	go pw()
	resp, err := http.Post(srv.URL+"/upload", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ev := waitOne(t, rec)
	b := ev.Request.Body
	if b == nil || b.Size != int64(len(body)) || !b.Truncated || b.Text != body[:DefaultBodyLimit] || ev.BytesIn != int64(len(body)) {
		t.Errorf("request body %d %v %d, bytes in %d", b.Size, b.Truncated, len(b.Text), ev.BytesIn)
	}
}

// TestSlowRequestBodyOverASocket: a client sends part of a body the handler never reads, and the rest
// only later. The capture gives up after its timeout and says so; the request still succeeds.
func TestSlowRequestBodyOverASocket(t *testing.T) {
	e, rec := newEcho(t, Config{RequestBodyTimeout: 50 * time.Millisecond}, func(e *echo.Echo) {
		e.POST("/", func(c echo.Context) error { return c.String(200, "ok") })
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := io.WriteString(conn, "defghij"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10))
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	ev := waitOne(t, rec)
	b := ev.Request.Body
	if b == nil || !b.TimedOut || b.Text != "abc" || b.Size != 10 || !b.Truncated {
		t.Errorf("request body %+v", b)
	}
}
