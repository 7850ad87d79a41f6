package event_test

import (
	"bytes"
	"fmt"

	"github.com/sluicelog/sluice/event"
)

// SafeJSON makes a document storable in PostgreSQL's jsonb: what jsonb refuses becomes \ufffd, a
// number numeric cannot hold becomes a string. A document that needs nothing is returned as it is.
func ExampleSafeJSON() {
	out, err := event.SafeJSON([]byte(`{"name":"a\u0000b","n":1e1000000,"ok":[1,2.5]}`), nil)
	fmt.Println(string(out), err)

	in := []byte(`{"already":"storable"}`)
	out, _ = event.SafeJSON(in, nil)
	fmt.Println(&out[0] == &in[0])

	_, err = event.SafeJSON([]byte(`{"a":1,}`), nil)
	fmt.Println(err)
	// Output:
	// {"name":"a\ufffdb","n":"1e1000000","ok":[1,2.5]} <nil>
	// true
	// invalid JSON at byte 7: expected a key
}

// hideCards is a JSONRewriter: it replaces the value of every "card" member, and masks the strings
// that start with "tok_".
type hideCards struct{}

func (hideCards) JSONKey(key []byte) (string, bool) { return `"[hidden]"`, string(key) == "card" }

func (hideCards) JSONString(s []byte) ([]byte, bool) {
	if !bytes.HasPrefix(s, []byte("tok_")) {
		return s, false
	}
	return []byte("tok_***"), true
}

// A JSONRewriter changes the document in the pass that validates it and makes it storable (the
// publishers redact bodies so, with a *redact.Redactor).
func ExampleSafeJSON_rewriter() {
	out, err := event.SafeJSON([]byte(`{"card":{"number":"4111"},"token":"tok_123","items":[{"card":"x"}]}`), hideCards{})
	fmt.Println(string(out), err)
	// Output:
	// {"card":"[hidden]","token":"tok_***","items":[{"card":"[hidden]"}]} <nil>
}
