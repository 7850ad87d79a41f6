package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fill sets every exported field of the struct v points to (and of the structs it points to) to a
// value that is not zero, naming each in the value itself where it is text, and returns the paths of
// the fields it set.
func fill(t *testing.T, v reflect.Value, path string) []string {
	t.Helper()
	var set []string
	typ := v.Type()
	for i := 0; i < typ.NumField(); i++ {
		f, fv := typ.Field(i), v.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		p := path + "." + f.Name
		switch {
		case f.Type == reflect.TypeOf(time.Time{}):
			fv.Set(reflect.ValueOf(time.Date(2026, 12, 2, 5, 6, 7, 8, time.UTC)))
		case f.Type == reflect.TypeOf(uuid.UUID{}):
			fv.Set(reflect.ValueOf(uuid.MustParse("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")))
		case f.Type == reflect.TypeOf(json.RawMessage{}):
			fv.Set(reflect.ValueOf(json.RawMessage(`{"k":[1,"` + f.Name + `\u0000", 1e1000000]}`)))
		case f.Type.Kind() == reflect.String: // with what storable text replaces: a NUL, an invalid byte
			fv.SetString(f.Name + " value\x00\xff<")
		case f.Type.Kind() == reflect.Int, f.Type.Kind() == reflect.Int64:
			fv.SetInt(7)
		case f.Type.Kind() == reflect.Float64:
			fv.SetFloat(1.5)
		case f.Type.Kind() == reflect.Bool:
			fv.SetBool(true)
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			ptr := reflect.New(f.Type.Elem())
			set = append(set, fill(t, ptr.Elem(), p)...)
			fv.Set(ptr)
		case f.Type == reflect.TypeOf(map[string][]string{}):
			fv.Set(reflect.ValueOf(map[string][]string{"B-Name\x00": {"2"}, "A-Name": {f.Name, "x\xff"}}))
		case f.Type == reflect.TypeOf(map[string]any{}):
			fv.Set(reflect.ValueOf(map[string]any{"n": 1.25, "s\x00": f.Name, "g": map[string]any{"b": true, "l": []any{"x\xff", nil, json.Number("1e1000000")}}}))
		default:
			t.Fatalf("%s: the test does not know how to fill a %s: teach it, and the encoder", p, f.Type)
		}
		set = append(set, p)
	}
	return set
}

// Every field of Event, however deep, is encoded by the hand-written encoder exactly as
// encoding/json encodes it, made storable (every text with a NUL and an invalid byte, a body's JSON and
// an attribute with a number numeric cannot hold): a field added to Event and forgotten in the encoder,
// or encoded without the storable-text rule, fails here.
func TestEncoderCoversEveryField(t *testing.T) {
	var e Event
	set := fill(t, reflect.ValueOf(&e).Elem(), "Event")
	if len(set) < 30 {
		t.Fatalf("filled only %d fields: %v", len(set), set)
	}
	want, err := marshalStorable(t, &e)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(want, []byte(`\u0000`)) || !bytes.Contains(want, []byte(`"1e1000000"`)) {
		t.Fatalf("the storable encoding still holds what it should not: %s", want)
	}
	got, ok := e.appendJSONFast(nil) // the hand-written path itself, not AppendJSON's fallback
	if !ok {
		t.Fatal("the hand-written encoder left the event to encoding/json")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("hand-written encoder differs from encoding/json:\n got %s\nwant %s", got, want)
	}
	var back map[string]any
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if n := reflect.TypeOf(e).NumField() - 2; len(back) != n { // Raw and nested are not encoded
		t.Errorf("%d top-level members encoded, want %d (one per field but Raw and nested)", len(back), n)
	}
}
