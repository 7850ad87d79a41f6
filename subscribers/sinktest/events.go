package sinktest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
)

// Events returns n realistic events with fresh ids, the first at ts and each next one a millisecond
// later (in UTC): three HTTP events (headers and JSON bodies, about 1.1 KB of JSON each, like real
// request logs) for every application event. The content depends only on n and ts; the ids are new on
// every call.
func Events(n int, ts time.Time) []*event.Event {
	rnd := rand.New(rand.NewPCG(uint64(ts.UnixNano()), uint64(n)))
	events := make([]*event.Event, n)
	for i := range events {
		at := ts.Add(time.Duration(i) * time.Millisecond)
		if i%4 == 3 {
			events[i] = AppEvent(rnd, at)
		} else {
			events[i] = HTTPEvent(rnd, at)
		}
	}
	return events
}

var (
	services   = []string{"orders", "billing", "catalog", "accounts"}
	userAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
		"okhttp/4.12.0",
		"Go-http-client/1.1",
	}
	routes = []struct{ method, route, path string }{
		{"GET", "/api/v1/orders/:id", "/api/v1/orders/%d"},
		{"POST", "/api/v1/orders", "/api/v1/orders"},
		{"PUT", "/api/v1/customers/:id/address", "/api/v1/customers/%d/address"},
		{"GET", "/api/v1/products", "/api/v1/products"},
	}
)

// HTTPEvent returns one HTTP request log event at ts with a fresh id, its content drawn from rnd: about
// 1.1 KB of JSON with request and response headers and JSON bodies. Status 5xx is ERROR, 4xx WARN, the
// rest INFO.
func HTTPEvent(rnd *rand.Rand, ts time.Time) *event.Event {
	r := routes[rnd.IntN(len(routes))]
	path := r.path
	if strings.Contains(path, "%d") {
		path = fmt.Sprintf(path, 1000+rnd.IntN(90000))
	}
	status := []int{200, 200, 200, 201, 204, 400, 404, 409, 500, 503}[rnd.IntN(10)]
	level := event.LevelInfo
	switch {
	case status >= 500:
		level = event.LevelError
	case status >= 400:
		level = event.LevelWarn
	}
	e := newEvent(level, event.KindHTTP, fmt.Sprintf("%s %s %d", r.method, r.route, status), ts)
	e.Service = services[rnd.IntN(len(services))]
	e.RequestID = randomUUID(rnd).String()
	e.TraceID = fmt.Sprintf("%016x%016x", rnd.Uint64(), rnd.Uint64())
	e.SpanID = fmt.Sprintf("%016x", rnd.Uint64())
	e.Method, e.Route, e.Path, e.Status = r.method, r.route, path, status
	e.DurationMS = float64(rnd.IntN(250_000)) / 1000
	e.ClientIP = fmt.Sprintf("10.%d.%d.%d", rnd.IntN(256), rnd.IntN(256), 1+rnd.IntN(254))
	e.UserAgent = userAgents[rnd.IntN(len(userAgents))]
	reqBody := fmt.Sprintf(`{"customer_id":%d,"items":[{"sku":"SKU-%05d","qty":%d,"price":"%d.99"},{"sku":"SKU-%05d","qty":%d,"price":"%d.49"}],"currency":"EUR"}`,
		rnd.IntN(100000), rnd.IntN(100000), 1+rnd.IntN(5), rnd.IntN(200), rnd.IntN(100000), 1+rnd.IntN(5), rnd.IntN(200))
	respBody := fmt.Sprintf(`{"id":%d,"status":"accepted","total":"%d.47"}`, rnd.IntN(1000000), rnd.IntN(400))
	e.Request = &event.Message{
		Query: "expand=items&lang=en",
		Headers: map[string][]string{
			"Accept":        {"application/json"},
			"Authorization": {"[REDACTED]"},
			"Content-Type":  {"application/json"},
			"X-Request-Id":  {e.RequestID},
		},
		Body: &event.Body{ContentType: "application/json", Size: int64(len(reqBody)), JSON: json.RawMessage(reqBody)},
	}
	e.Response = &event.Message{
		Headers: map[string][]string{
			"Content-Type":  {"application/json; charset=UTF-8"},
			"Cache-Control": {"no-store"},
		},
		Body: &event.Body{ContentType: "application/json", Size: int64(len(respBody)), JSON: json.RawMessage(respBody)},
	}
	e.BytesIn, e.BytesOut = int64(len(reqBody)), int64(len(respBody))
	if status >= 500 {
		e.Error = "upstream: context deadline exceeded"
	}
	return e
}

// AppEvent returns one application log event at ts with a fresh id, its content drawn from rnd, with a
// few attributes and a source location.
func AppEvent(rnd *rand.Rand, ts time.Time) *event.Event {
	level := event.Levels[rnd.IntN(len(event.Levels))]
	msgs := []string{"cache refreshed", "payment provider slow", "retrying publish", "order state changed"}
	e := newEvent(level, event.KindApp, msgs[rnd.IntN(len(msgs))], ts)
	e.Service = services[rnd.IntN(len(services))]
	e.Source = fmt.Sprintf("internal/orders/service.go:%d orders.(*Service).Process", 40+rnd.IntN(400))
	e.Attrs = map[string]any{
		"order_id": float64(rnd.IntN(1000000)),
		"attempt":  float64(1 + rnd.IntN(3)),
		"provider": "acme-pay",
		"elapsed":  "152.4ms",
		"cache":    map[string]any{"hits": float64(rnd.IntN(1000)), "misses": float64(rnd.IntN(100))},
	}
	return e
}

// randomUUID returns a version 4 UUID drawn from rnd.
func randomUUID(rnd *rand.Rand) uuid.UUID {
	var id uuid.UUID
	binary.LittleEndian.PutUint64(id[:8], rnd.Uint64())
	binary.LittleEndian.PutUint64(id[8:], rnd.Uint64())
	id[6] = (id[6] & 0x0f) | 0x40
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}

// newEvent is event.New at a given time.
func newEvent(level event.Level, kind event.Kind, msg string, ts time.Time) *event.Event {
	e := event.New(level, kind, msg)
	e.TS = ts.UTC()
	return e
}
