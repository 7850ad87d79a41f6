package event

import (
	"encoding/json"
	"testing"
	"time"
)

// benchEvent is a realistic HTTP event: about 1.1 KB of JSON, with request and response headers, a JSON
// body each way, and a few attributes.
func benchEvent() *Event {
	e := New(LevelInfo, KindHTTP, "POST /api/v1/orders 201")
	e.TS = time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)
	e.Service, e.RequestID = "orders-api", "01J8ZK6Q4W3E2R1T0Y9U8I7O6P"
	e.TraceID, e.SpanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	e.Method, e.Route, e.Path, e.Status = "POST", "/api/v1/orders", "/api/v1/orders", 201
	e.DurationMS, e.ClientIP, e.BytesIn, e.BytesOut = 12.734, "203.0.113.42", 187, 243
	e.UserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
	e.Request = &Message{
		Query: "dry_run=false&source=web",
		Headers: map[string][]string{
			"Accept":          {"application/json"},
			"Accept-Encoding": {"gzip, deflate, br"},
			"Content-Type":    {"application/json"},
			"Content-Length":  {"187"},
			"Authorization":   {"[REDACTED]"},
			"X-Forwarded-For": {"203.0.113.42, 10.0.0.7"},
		},
		Body: &Body{ContentType: "application/json", Size: 187, JSON: json.RawMessage(
			`{"customer_id":"c_82731","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","note":"leave at the door"}`)},
	}
	e.Response = &Message{
		Headers: map[string][]string{
			"Content-Type":   {"application/json; charset=utf-8"},
			"Location":       {"/api/v1/orders/o_99812"},
			"Cache-Control":  {"no-store"},
			"X-Content-Type": {"nosniff"},
		},
		Body: &Body{ContentType: "application/json; charset=utf-8", Size: 243, JSON: json.RawMessage(
			`{"id":"o_99812","status":"created","total":45.48,"currency":"EUR","created_at":"2026-03-14T09:26:53Z","items":2,"links":{"self":"/api/v1/orders/o_99812","customer":"/api/v1/customers/c_82731"}}`)},
	}
	e.Attrs = map[string]any{"tenant": "acme", "retries": 0.0, "cache_hit": false, "region": "eu-west-1"}
	return e
}

func BenchmarkAppendJSON(b *testing.B) {
	e := benchEvent()
	j, _ := json.Marshal(e)
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(j)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(j)))
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = e.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendMessageJSON is pgsink's work per event: the request, response and attributes as
// separate documents.
func BenchmarkAppendMessageJSON(b *testing.B) {
	e := benchEvent()
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, err1 := json.Marshal(e.Request)
			_, err2 := json.Marshal(e.Response)
			_, err3 := json.Marshal(e.Attrs)
			if err1 != nil || err2 != nil || err3 != nil {
				b.Fatal(err1, err2, err3)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, err1 := e.Request.AppendJSON(nil)
			_, err2 := e.Response.AppendJSON(nil)
			_, err3 := AppendAttrsJSON(nil, e.Attrs)
			if err1 != nil || err2 != nil || err3 != nil {
				b.Fatal(err1, err2, err3)
			}
		}
	})
}

// BenchmarkDecode measures decoding a bus message's line (the broker path): Decode, DecodeLean (what a
// worker uses), and their part that makes the line storable (SafeJSON over a line that needs nothing,
// the common case).
func BenchmarkDecode(b *testing.B) {
	line, err := Encode(benchEvent())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			if events, bad := Decode(line); len(events) != 1 || len(bad) != 0 {
				b.Fatal(bad)
			}
		}
	})
	b.Run("lean", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			if events, bad := DecodeLean(line); len(events) != 1 || len(bad) != 0 {
				b.Fatal(bad)
			}
		}
	})
	b.Run("safejson", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := SafeJSON(line[:len(line)-1], nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
