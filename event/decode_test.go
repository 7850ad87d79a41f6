package event

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// leanCases are lines that DecodeLean must read as Decode does (then Lean): every field, the odd
// spellings encoding/json accepts, and what it refuses.
func leanCases(t testing.TB) []string {
	full, err := benchEvent().AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	const head = `"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"ERROR","kind":"app"`
	return []string{
		string(full),
		`{` + head + `,"message":"m"}`,
		`{` + head + `,"message":"tab\there \"quoted\" \u00e9 \ud83d\ude00","error":"x\\y"}`,
		` { ` + head + ` , "message" : "spaces" , "status" : 500 , "duration_ms" : 1.5e3 } `,
		`{` + head + `,"message":"m","status":null,"service":null,"request":null,"attrs":null,"id":null}`,
		`{` + head + `,"message":"m","status":-0,"bytes_in":9223372036854775807,"bytes_out":-1}`,
		`{` + head + `,"message":"m","status":1.5}`,                  // refused: not an int
		`{` + head + `,"message":"m","status":"500"}`,                // refused: a string
		`{` + head + `,"message":"m","status":99999999999999999999}`, // refused: overflow
		`{` + head + `,"message":"m","bytes_in":1e3}`,                // refused
		`{` + head + `,"message":"m","duration_ms":1e400}`,           // refused: out of float64's range
		`{` + head + `,"message":"m","duration_ms":"1"}`,             // refused
		`{` + head + `,"message":1}`,                                 // refused
		`{` + head + `,"message":true}`,                              // refused
		`{` + head + `,"message":"m","request":[]}`,                  // refused: not an object
		`{` + head + `,"message":"m","attrs":"a"}`,                   // refused
		`{` + head + `,"message":"m","attrs":{"a":[1,{"b":null}],"n":12345678901234567890}}`,
		`{` + head + `,"message":"m","request":{"query":"q"},"request":{"query":"r"}}`, // the last one wins
		`{` + head + `,"Message":"folded","LEVEL":"WARN"}`,                             // encoding/json matches keys case-insensitively
		`{` + head + `,"meſſage":"folded by Unicode"}`,
		`{` + head + `,"mess\u0061ge":"escaped key"}`,
		`{` + head + `,"message":"m","unknown":{"deep":[1,2,3]},"-":1,"Raw":"x"}`,
		`{` + head + `,"message":"first","message":"last"}`,
		`{"id":"0193B5E2-8F4C-7D2A-9B1E-3C4D5E6F7A8B","ts":"2026-01-01T01:00:00+01:00","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"urn:uuid:0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"0193b5e2\u002d8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"not a uuid","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026\u002d01-01T00:00:00Z","level":"INFO","kind":"http","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":1,"level":"INFO","kind":"http","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"info","kind":"http","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"db","message":"m"}`,
		`{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"\u0049NFO","kind":"http","message":"m"}`,
		`{}`,
		`[]`,
		`"a string"`,
		`{` + head + `,"message":"a\u0000b","attrs":{"n":1e1000000}}`, // made storable first
		"{" + head + ",\"message\":\"invalid \xff utf-8\"}",
		`not json`,
		`{` + head + `,"message":"m"` + strings.Repeat(`,"x":1`, 40) + `}`, // more members than the notes' first buffer
	}
}

// TestDecodeLeanMatchesDecode runs every case through both decoders.
func TestDecodeLeanMatchesDecode(t *testing.T) {
	cases := leanCases(t)
	for _, line := range cases {
		checkLean(t, []byte(line))
	}
	checkLean(t, []byte(strings.Join(cases, "\n"))) // one payload: line numbers too
}

// checkLean fails unless DecodeLean reads payload as Decode followed by Lean does, but for the one
// difference DecodeLean documents: the members of request and response are not type-checked, so a
// line Decode refuses for one of them DecodeLean keeps, or refuses for another reason.
func checkLean(t *testing.T, payload []byte) {
	t.Helper()
	want, wantBad := Decode(payload)
	got, gotBad := DecodeLean(payload)
	for _, e := range got { // where the decoder noted the nested parts, they are where RawMember finds them
		for _, k := range []string{"request", "response", "attrs", "message"} {
			v, ok := e.RawNested(k)
			w, wok := RawMember(e.Raw, k)
			if ok != wok || string(v) != string(w) {
				t.Fatalf("payload %q: RawNested(%q) = %q, %v; RawMember: %q, %v", payload, k, v, ok, w, wok)
			}
		}
		e.nested = nestedSpans{} // Decode notes nothing
	}
	for _, e := range want {
		e.Lean()
	}
	kept := map[int]bool{} // lines Decode refuses for a member of request or response
	wantErr := map[int]*LineError{}
	for _, b := range wantBad {
		var te *json.UnmarshalTypeError
		if errors.As(b.Err, &te) && (strings.HasPrefix(te.Field, "request.") || strings.HasPrefix(te.Field, "response.")) {
			kept[b.Line] = true
		} else {
			wantErr[b.Line] = b
		}
	}
	refusedKept := 0
	for _, b := range gotBad {
		if kept[b.Line] {
			refusedKept++
			continue
		}
		w, ok := wantErr[b.Line]
		if !ok || b.Error() != w.Error() || string(b.Raw) != string(w.Raw) {
			t.Fatalf("payload %q: DecodeLean refused line %d (%v); Decode: %v", payload, b.Line, b, wantBad)
		}
		delete(wantErr, b.Line)
	}
	if len(wantErr) > 0 {
		t.Fatalf("payload %q: DecodeLean kept lines that Decode refuses: %v", payload, wantErr)
	}
	if len(got) != len(want)+len(kept)-refusedKept {
		t.Fatalf("payload %q: DecodeLean read %d events, Decode %d (and %d kept)", payload, len(got), len(want), len(kept)-refusedKept)
	}
	if len(kept) > 0 {
		return // the events no longer pair up one to one
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("payload %q:\nDecodeLean %+v\nDecode     %+v", payload, got[i], want[i])
		}
	}
}

// A nested part written twice, null first or last, leaves the fast path: RawNested and RawMember
// agree on which one the event has.
func TestDecodeLeanNestedPartTwice(t *testing.T) {
	head := `{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"http","message":"m",`
	for _, line := range []string{
		head + `"request":null,"request":{"method":"GET"}}`,
		head + `"request":{"method":"GET"},"request":null}`,
	} {
		if new(Event).readTop([]byte(line)) {
			t.Errorf("%s: the fast path read a nested part written twice", line)
		}
		checkLean(t, []byte(line))
	}
}

func TestDecodeLeanKeepsNestedPartsAsWritten(t *testing.T) {
	line := `{"id":"0193b5e2-8f4c-7d2a-9b1e-3c4d5e6f7a8b","ts":"2026-01-01T00:00:00Z","level":"INFO","kind":"http","message":"m",` +
		`"request":{"query":1,"extra":true},"attrs":{"big":12345678901234567890}}`
	if _, bad := Decode([]byte(line)); len(bad) != 1 {
		t.Fatalf("Decode: bad %v, want the query refused", bad)
	}
	got, bad := DecodeLean([]byte(line))
	if len(bad) != 0 || len(got) != 1 {
		t.Fatalf("DecodeLean: %d events, bad %v", len(got), bad)
	}
	e := got[0]
	if e.Request != nil || e.Attrs != nil || string(e.Raw) != line {
		t.Fatalf("not lean, or Raw changed: %+v", e)
	}
	if v, _ := RawMember(e.Raw, "attrs"); string(v) != `{"big":12345678901234567890}` {
		t.Fatalf("attrs %s: the number's text must stay as written", v)
	}
}

func FuzzDecodeLean(f *testing.F) {
	for _, c := range leanCases(f) {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		checkLean(t, line)
	})
}

func TestDecodeLeanTypicalEventsTakeTheFastPath(t *testing.T) {
	for _, e := range []*Event{benchEvent(), New(LevelWarn, KindApp, `a "quoted" message`)} {
		line, err := e.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !new(Event).readTop(line) {
			t.Errorf("%s: the fast path gave up", line)
		}
	}
}

// RawNested finds the nested parts where DecodeLean noted them, and scans Raw when Raw is no longer
// the slice they were noted in.
func TestRawNestedFollowsRaw(t *testing.T) {
	line, err := benchEvent().AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, bad := DecodeLean(line)
	if len(bad) > 0 || len(got) != 1 {
		t.Fatalf("DecodeLean: %d events, bad %v", len(got), bad)
	}
	e := got[0]
	if e.nested.n == 0 {
		t.Fatal("DecodeLean noted nothing")
	}
	want, _ := RawMember(e.Raw, "request")
	if v, ok := e.RawNested("request"); !ok || len(want) < 10 || string(v) != string(want) {
		t.Fatalf("request %q, %v; want %q", v, ok, want)
	}
	e.Raw = append([]byte(nil), e.Raw...) // the same bytes elsewhere
	if v, ok := e.RawNested("request"); !ok || string(v) != string(want) {
		t.Fatalf("request after a copy of Raw: %q, %v; want %q", v, ok, want)
	}
	e.Raw = []byte(`{"attrs":{"a":1}}`)
	if v, ok := e.RawNested("attrs"); !ok || string(v) != `{"a":1}` {
		t.Fatalf("attrs of a new Raw: %q, %v", v, ok)
	}
	if v, ok := e.RawNested("request"); ok {
		t.Fatalf("request of a new Raw without one: %q", v)
	}
}

// EncodeRaw notes where it wrote the nested parts, and SetRaw with a copy of its output anywhere
// lets RawNested read them there: the same bytes RawMember finds, for random events (those the fast
// encoder leaves to encoding/json too). SetRaw with other bytes falls back to a scan.
func TestEncodeRawNotesTheNestedParts(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	noted := 0
	for i := range 2000 {
		e := genEvent(r)
		if i%7 == 0 {
			e.Request, e.Attrs = nil, nil
		}
		line, err := e.EncodeRaw([]byte("prefix"))
		if err != nil {
			continue // encoding/json refuses it too
		}
		line = line[len("prefix"):]
		if want, _ := e.AppendJSON(nil); string(want) != string(line) {
			t.Fatalf("event %d: EncodeRaw wrote %s, AppendJSON %s", i, line, want)
		}
		if e.nested.n > 0 {
			noted++
		}
		chunk := append(append([]byte("{}\n"), line...), '\n')
		e.SetRaw(chunk[3 : len(chunk)-1])
		for _, key := range []string{"request", "response", "attrs"} {
			got, ok := e.RawNested(key)
			want, wok := RawMember(e.Raw, key)
			if ok != wok || string(got) != string(want) {
				t.Fatalf("event %d: RawNested(%q) = %s, %v; RawMember %s, %v (line %s)", i, key, got, ok, want, wok, e.Raw)
			}
		}
	}
	if noted < 500 { // the others took encoding/json's path (odd strings, numbers)
		t.Fatalf("EncodeRaw noted the nested parts of %d events of 2000", noted)
	}
	e := benchEvent() // a typical event: noted
	line, err := e.EncodeRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.SetRaw(append([]byte(nil), line...)); e.nested.base == nil {
		t.Fatal("SetRaw of EncodeRaw's output did not take the noted places")
	}
	other := []byte(`{"attrs":{"a":1}}`)
	e.SetRaw(other)
	if v, ok := e.RawNested("attrs"); !ok || string(v) != `{"a":1}` {
		t.Fatalf("attrs of other bytes: %q, %v", v, ok)
	}
	if v, ok := e.RawNested("request"); ok {
		t.Fatalf("request of other bytes without one: %q", v)
	}
}
