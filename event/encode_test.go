package event

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The fast encoder must write json.Marshal's bytes made storable (SafeJSON) exactly. These tests
// generate events full of what encoding/json escapes or formats specially, and of what storable text
// replaces, and compare, byte for byte; where encoding/json fails, the fast encoder must give up (and
// AppendJSON then reports encoding/json's error).

// marshalStorable is json.Marshal(v) made storable: what the encoder must write for v.
func marshalStorable(t *testing.T, v any) ([]byte, error) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out, err := safeJSON(b, nil, decodeDepth)
	if err != nil {
		t.Fatalf("json.Marshal wrote what SafeJSON refuses: %v: %.200q", err, b)
	}
	return out, nil
}

// pieces are the parts generated strings are made of.
var pieces = []string{
	"", "a", "hello world", "GET", "/users/42", "é", "日本語", "🙂", "\u2028", "\u2029", "\u2027", "\u202a",
	"<", ">", "&", "<script>alert(1)</script>", `"`, `\`, `\u0000`, "/", "'", "\x00", "\x01", "\x1f", "\x7f",
	"\b", "\f", "\n", "\r", "\t", "\xff", "\xe2\x80", "\xe2", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80",
	"\uFFFD", "\U0010FFFF", strings.Repeat("x", 100),
}

func genString(r *rand.Rand) string {
	var sb strings.Builder
	for range r.IntN(6) {
		sb.WriteString(pieces[r.IntN(len(pieces))])
	}
	return sb.String()
}

var floats = []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 123.456, 1e-6, 9.99e-7, 1e-7, 1.5e-300, 5e-324,
	1e20, 99999999999999999999, 1e21, 1.7976931348623157e308, -1e21, -1e-7, 1.0 / 3, 12.000001, math.NaN(),
	math.Inf(1), math.Inf(-1)}

func genFloat(r *rand.Rand) float64 {
	switch r.IntN(3) {
	case 0:
		return floats[r.IntN(len(floats))]
	case 1:
		return r.Float64() * 1000
	}
	return math.Float64frombits(r.Uint64())
}

type stringer struct{ A int }

func genValue(r *rand.Rand, depth int) any {
	n := 16
	if depth > 3 {
		n = 10 // no containers
	}
	switch r.IntN(n) {
	case 0:
		return nil
	case 1:
		return genString(r)
	case 2:
		return r.IntN(2) == 0
	case 3:
		return genFloat(r)
	case 4:
		return r.Int() - r.Int()
	case 5:
		return int64(r.Uint64())
	case 6:
		return []any{float32(genFloat(r)), int32(r.Uint32()), uint(r.Uint64()), uint64(r.Uint64()), int8(-3)}[r.IntN(5)]
	case 7:
		return []any{time.Unix(r.Int64N(1e10), r.Int64N(1e9)).UTC(), time.Duration(r.Int64()), json.Number("12.5"),
			[]byte(genString(r)), stringer{A: 1}, &stringer{A: 2}, Level(genString(r)), json.RawMessage(` [1, "<"] `),
			map[string]string{"b": genString(r), "a": "x"}, []string{genString(r)}, make(chan int), struct{ X float64 }{math.NaN()},
		}[r.IntN(12)]
	case 8:
		return genString(r) + genString(r)
	case 9:
		return float64(r.IntN(1000))
	case 10, 11, 12:
		return genAttrs(r, depth+1)
	default:
		if r.IntN(8) == 0 {
			return []any(nil)
		}
		l := make([]any, r.IntN(4))
		for i := range l {
			l[i] = genValue(r, depth+1)
		}
		return l
	}
}

func genAttrs(r *rand.Rand, depth int) map[string]any {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return map[string]any{}
	}
	m := make(map[string]any)
	for range r.IntN(20) {
		m[genString(r)] = genValue(r, depth)
	}
	return m
}

func genHeaders(r *rand.Rand) map[string][]string {
	switch r.IntN(6) {
	case 0:
		return nil
	case 1:
		return map[string][]string{}
	}
	h := make(map[string][]string)
	names := []string{"Content-Type", "Accept", "User-Agent", "X-Request-Id", "Set-Cookie", "a", "B", "b", "_"}
	for range r.IntN(40) {
		k := names[r.IntN(len(names))]
		if r.IntN(3) == 0 {
			k = genString(r)
		}
		switch r.IntN(8) {
		case 0:
			h[k] = nil
		case 1:
			h[k] = []string{}
		default:
			for range 1 + r.IntN(2) {
				h[k] = append(h[k], genString(r))
			}
		}
	}
	return h
}

// genJSON returns a JSON document with whitespace between its tokens at random (and, now and then, a
// token spoiled so that the document is invalid).
func genJSON(r *rand.Rand, depth int) string {
	ws := func() string { return []string{"", "", "", " ", "\n", "\t", "\r\n  "}[r.IntN(7)] }
	var s string
	switch k := r.IntN(12); {
	case depth > 4 || k < 3:
		s = []string{"0", "-0", "12", "-1.5e+10", "1E-7", "3.25", "true", "false", "null", "1e400"}[r.IntN(10)]
	case k < 6:
		b, _ := json.Marshal(genString(r))
		s = string(b)
		if r.IntN(2) == 0 { // unescaped HTML and line separators, other escapes
			s = `"<a href='x'>&amp;` + "\u2028\u2029é\xff" + `\/\u00e9\uD83D\uDE00\b"`
		}
	case k < 9:
		parts := make([]string, r.IntN(4))
		for i := range parts {
			parts[i] = ws() + genJSON(r, depth+1) + ws()
		}
		s = "[" + ws() + strings.Join(parts, ",") + "]"
	default:
		parts := make([]string, r.IntN(4))
		for i := range parts {
			key, _ := json.Marshal(genString(r))
			parts[i] = ws() + string(key) + ws() + ":" + ws() + genJSON(r, depth+1) + ws()
		}
		s = "{" + ws() + strings.Join(parts, ",") + "}"
	}
	if depth == 0 && r.IntN(10) == 0 {
		bad := []string{"01", "1.", "-", "1e", "1e+", "[1,]", `{"a":1,}`, "tru", "nul", `"\x"`, `"\u12g4"`,
			"[]]", "1 2", "\"a\tb\"", "\"a\x00\"", "{1:2}", `{"a" 1}`, "[1 2]", ".5", "+1", "\"", "'a'", "  "}
		s = []string{s + bad[r.IntN(len(bad))], bad[r.IntN(len(bad))]}[r.IntN(2)]
	}
	return ws() + s + ws()
}

func genMessage(r *rand.Rand) *Message {
	if r.IntN(4) == 0 {
		return nil
	}
	m := &Message{Headers: genHeaders(r)}
	if r.IntN(2) == 0 {
		m.Query = genString(r)
	}
	if r.IntN(4) == 0 {
		m.HeadersDropped = r.IntN(1000)
	}
	if r.IntN(4) > 0 {
		b := &Body{Size: r.Int64N(1 << 20), Truncated: r.IntN(2) == 0, TimedOut: r.IntN(3) == 0}
		if r.IntN(2) == 0 {
			b.ContentType = genString(r)
		}
		if r.IntN(4) == 0 {
			b.Omitted = genString(r)
		}
		switch r.IntN(4) {
		case 0, 1:
			b.JSON = json.RawMessage(genJSON(r, 0))
		case 2:
			b.Text = genString(r)
		default:
			b.Base64 = genString(r)
		}
		m.Body = b
	}
	return m
}

var zones = []*time.Location{time.UTC, time.FixedZone("", 0), time.FixedZone("A", 5*3600+30*60),
	time.FixedZone("B", -8*3600), time.FixedZone("C", 23*3600+59*60+59), time.FixedZone("D", 24*3600),
	time.FixedZone("E", -100*3600), time.FixedZone("F", 45)}

func genTime(r *rand.Rand) time.Time {
	var t time.Time
	switch r.IntN(10) {
	case 0:
		t = time.Date(r.IntN(30000)-10000, 1, 1, 0, 0, 0, r.IntN(3)*int(r.Int32()), time.UTC)
	case 1:
		t = time.Time{}
	case 2:
		t = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	default:
		t = time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2)))
	}
	return t.In(zones[r.IntN(len(zones))])
}

func genEvent(r *rand.Rand) *Event {
	opt := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return genString(r)
	}
	e := &Event{Level: Level(genString(r)), Kind: Kind(genString(r)), Message: genString(r), TS: genTime(r)}
	for i := range e.ID {
		e.ID[i] = byte(r.Uint32())
	}
	if r.IntN(2) == 0 {
		e.ID = uuid.Nil
	}
	e.Service, e.RequestID, e.TraceID, e.SpanID = opt(), opt(), opt(), opt()
	e.Method, e.Route, e.Path, e.ClientIP, e.UserAgent, e.Error, e.Source = opt(), opt(), opt(), opt(), opt(), opt(), opt()
	if r.IntN(2) == 0 {
		e.Status = r.IntN(600) - r.IntN(2)*int(r.Int32())
	}
	if r.IntN(2) == 0 {
		e.DurationMS = genFloat(r)
	}
	if r.IntN(2) == 0 {
		e.BytesIn, e.BytesOut = r.Int64N(1e6), r.Int64()-r.Int64()
	}
	e.Request, e.Response, e.Attrs = genMessage(r), genMessage(r), genAttrs(r, 0)
	return e
}

// checkEvent compares the fast encoding of e with json.Marshal's, and reports whether the fast path
// took it.
func checkEvent(t *testing.T, e *Event) bool {
	t.Helper()
	want, wantErr := marshalStorable(t, e)
	fast, ok := e.appendJSONFast([]byte("prefix"))
	if ok && !bytes.Equal(fast, append([]byte("prefix"), want...)) {
		t.Fatalf("fast encoding differs from encoding/json (err %v)\nevent: %#v\nfast: %q\njson: %q", wantErr, e, fast[6:], want)
	}
	if ok && wantErr != nil {
		t.Fatalf("fast encoding succeeded where encoding/json fails: %v\n%q", wantErr, fast)
	}
	got, err := e.AppendJSON(nil)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON = %q, %v; encoding/json %q, %v", got, err, want, wantErr)
	}
	for _, m := range []*Message{e.Request, e.Response} {
		want, wantErr := marshalStorable(t, m)
		got, err := m.AppendJSON([]byte("x"))
		if (err != nil) != (wantErr != nil) || wantErr == nil && !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Fatalf("Message.AppendJSON = %q, %v; encoding/json %q, %v", got, err, want, wantErr)
		}
	}
	want, wantErr = marshalStorable(t, e.Attrs)
	got, err = AppendAttrsJSON([]byte("x"), e.Attrs)
	if (err != nil) != (wantErr != nil) || wantErr == nil && !bytes.Equal(got, append([]byte("x"), want...)) {
		t.Fatalf("AppendAttrsJSON = %q, %v; encoding/json %q, %v", got, err, want, wantErr)
	}
	return ok
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for range n {
		if checkEvent(t, genEvent(r)) {
			fast++
		}
	}
	t.Logf("%d of %d events took the fast path", fast, n)
	if fast < n/10 {
		t.Errorf("only %d of %d events took the fast path", fast, n)
	}
}

func TestAppendJSONTypicalEventsTakeTheFastPath(t *testing.T) {
	for _, e := range []*Event{benchEvent(), New(LevelInfo, KindApp, "hello"), {}} {
		if _, ok := e.appendJSONFast(nil); !ok {
			t.Errorf("event %s left to encoding/json", e.ID)
		}
		checkEvent(t, e)
	}
}

func TestAppendRawJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, s := range []string{"0", "-0", "-", "01", "1.", "1.5", "1e", "1e+", "1E-09", "-12.5e+3", "[1,]",
		`{"a":1,}`, "tru", "true", "false", "null", "nul", "nullx", `"\x"`, `"\u12g4"`, `"\u12aF"`, `"\/"`,
		"[]]", "1 2", "\"a\tb\"", "\"a\x7f\"", `"\u0000\ud800"`, `[1e1000000]`, " { \"a\" : [ 1 , 2 ] } ", "\t\r\n[]\n", "{1:2}", `{"a" 1}`, "[1 2]",
		".5", "+1", `"`, "'a'", "  ", "\"\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xaa\xe2\x80\"", "\"\xe2\x80\xa8", "\"<>&\"",
		"\"\xff\"", `{"a":{"b":[true,false,null,{}]}}`, "[\"\\\"]\"]", deep(999), deep(1000), deep(1001),
		deep(10001), "{\"a\":1}x", "[1]\x00"} {
		want, wantErr := marshalStorable(t, json.RawMessage(s))
		got, ok := appendRawJSON([]byte("x"), []byte(s))
		if ok && (wantErr != nil || !bytes.Equal(got, append([]byte("x"), want...))) {
			t.Errorf("appendRawJSON(%.40q) = %.60q; encoding/json %.60q, %v", s, got, want, wantErr)
		}
		if !ok && wantErr == nil && len(s) < 2000 {
			t.Errorf("appendRawJSON(%.40q) refused what encoding/json accepts", s)
		}
	}
}

func TestAppendJSONOddTimes(t *testing.T) {
	for _, ts := range []time.Time{
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 1, zones[5]),
		time.Date(2026, 1, 1, 0, 0, 0, 1, zones[6]), time.Date(2026, 1, 1, 0, 0, 0, 100, zones[4]),
	} {
		checkEvent(t, &Event{TS: ts})
	}
}

// FuzzAppendJSON puts fuzzed text into every kind of place an event has a string, and fuzzed bytes in
// a body's JSON.
func FuzzAppendJSON(f *testing.F) {
	f.Add("GET /x <b>", "text/html; charset=utf-8", "k", "v\u2028", []byte(` {"a": [1, 2.5e-7, "<&>"]} `), 1.5)
	f.Add("\x00\xff\xe2\x80", "\t", "", "", []byte("\"\xe2\x80\xa9\""), 1e21)
	f.Fuzz(func(t *testing.T, msg, header, key, value string, body []byte, num float64) {
		e := benchEvent()
		e.Message, e.Path, e.DurationMS = msg, value, num
		e.Request.Headers[header] = []string{value, msg}
		e.Request.Body.JSON = body
		e.Response.Headers[key] = nil
		e.Response.Body = &Body{Text: value, ContentType: header}
		e.Attrs = map[string]any{key: value, msg: []any{num, header, map[string]any{value: float32(num)}}}
		checkEvent(t, e)
	})
}
