package sinktest

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/subscribers"
)

// UnsafeDeadLetters returns dead letters as a batcher makes them, failed at failedAt, on route "test",
// one of each kind and full of what stores refuse as text:
//
//  0. invalid_data: an event refused by the store, with its id and batch id; its raw JSON carries a NUL
//     byte and invalid UTF-8, and so does the detail.
//  1. decode_error: a line that is not JSON (no id, no batch id), with NUL and invalid UTF-8.
//  2. decode_error: a line of every byte value, 0 to 255.
//  3. oversize: an event of just over 1 MiB, with its id.
//  4. decode_error: an empty line (nil Raw).
func UnsafeDeadLetters(failedAt time.Time) []subscribers.DeadLetter {
	const route = "test"
	id, batch, big := uuid.New(), uuid.New(), uuid.New()
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	large := `{"id":"` + big.String() + `","attrs":{"blob":"` + strings.Repeat("0123456789abcdef", 1<<16) + `"}}`
	return []subscribers.DeadLetter{
		{ID: id, BatchID: batch, Route: route, Reason: subscribers.ReasonInvalidData,
			Detail: "ERROR: invalid byte sequence for encoding \"UTF8\": 0x00 \x00\xff (SQLSTATE 22021)",
			Raw:    []byte(`{"id":"` + id.String() + `","message":"a` + "\x00" + `b` + "\xff\xfe" + `c"}`), FailedAt: failedAt},
		{Route: route, Reason: subscribers.ReasonDecodeError, Detail: "line 1: invalid character 'n' \xc3",
			Raw: []byte("{not json \x00\xff\xfe}\r"), FailedAt: failedAt},
		{Route: route, Reason: subscribers.ReasonDecodeError, Detail: "line 2: invalid character",
			Raw: every, FailedAt: failedAt},
		{ID: big, BatchID: batch, Route: route, Reason: subscribers.ReasonOversize,
			Detail: fmt.Sprintf("event of %d bytes is larger than the route's 1048576", len(large)),
			Raw:    []byte(large), FailedAt: failedAt},
		{Route: route, Reason: subscribers.ReasonDecodeError, Detail: "line 4: empty", FailedAt: failedAt},
	}
}

// Dead letters are kept byte for byte, once each however often they are written, and are not events.
func testDeadLetters(t *testing.T, s subscribers.Sink, r Reader) {
	dl, ok := s.(subscribers.DeadLetterSink)
	if !ok {
		t.Skip("the sink is not a subscribers.DeadLetterSink")
	}
	ctx := testContext(t)
	if err := dl.WriteDeadLetters(ctx, nil); err != nil {
		t.Fatalf("WriteDeadLetters(nil): %v", err)
	}
	events := Events(10, baseTime)
	write(t, ctx, s, events)

	letters := UnsafeDeadLetters(baseTime)
	if err := dl.WriteDeadLetters(ctx, letters); err != nil {
		t.Fatalf("WriteDeadLetters: %v", err)
	}
	// The same letters again, as after a redelivery: in another order, in other batches, a minute later
	// (within the hour), one of them twice.
	again := slices.Clone(letters)
	slices.Reverse(again)
	for i := range again {
		if again[i].BatchID != uuid.Nil {
			again[i].BatchID = uuid.New()
		}
		again[i].FailedAt = again[i].FailedAt.Add(time.Minute)
	}
	again = append(again, again[1])
	if err := dl.WriteDeadLetters(ctx, again); err != nil {
		t.Fatalf("WriteDeadLetters again: %v", err)
	}

	expectStored(t, ctx, r, events) // dead letters are not events
	dr, ok := r.(DeadLetterReader)
	if !ok {
		t.Log("the Reader is not a DeadLetterReader: stored dead letters not checked")
		return
	}
	got, err := dr.DeadLetters(ctx)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	expectDeadLetters(t, got, letters)
}

// expectDeadLetters checks that got holds each of want once, as it was written, and nothing else.
// Detail may have NUL and invalid UTF-8 replaced (it is text); everything else must be kept exactly.
func expectDeadLetters(t *testing.T, got, want []subscribers.DeadLetter) {
	t.Helper()
	byReason := func(ls []subscribers.DeadLetter) map[string]int {
		m := map[string]int{}
		for _, l := range ls {
			m[l.Reason]++
		}
		return m
	}
	if g, w := byReason(got), byReason(want); !maps.Equal(g, w) {
		t.Errorf("dead letters by reason = %v, want %v", g, w)
	}
	same := func(a, b subscribers.DeadLetter) bool {
		if a.Reason != b.Reason || a.Route != b.Route || a.ID != b.ID {
			return false
		}
		return a.ID != uuid.Nil || bytes.Equal(a.Raw, b.Raw)
	}
	for i, w := range want {
		var matches []subscribers.DeadLetter
		for _, g := range got {
			if same(g, w) {
				matches = append(matches, g)
			}
		}
		if len(matches) != 1 {
			t.Errorf("letter %d (%s, id %s): stored %d times, want once", i, w.Reason, w.ID, len(matches))
			continue
		}
		g := matches[0]
		if !bytes.Equal(g.Raw, w.Raw) {
			t.Errorf("letter %d: raw of %d bytes read back as %d bytes %q...", i, len(w.Raw), len(g.Raw), head(g.Raw))
		}
		if g.BatchID != w.BatchID {
			t.Errorf("letter %d: batch id %s, want %s (the first write's)", i, g.BatchID, w.BatchID)
		}
		if !g.FailedAt.Equal(w.FailedAt) {
			t.Errorf("letter %d: failed at %v, want %v (the first write's)", i, g.FailedAt, w.FailedAt)
		}
		if textOf(g.Detail) != textOf(w.Detail) {
			t.Errorf("letter %d: detail %q, want %q (NUL and invalid UTF-8 may be replaced)", i, g.Detail, w.Detail)
		}
	}
	if len(got) != len(want) {
		t.Errorf("store holds %d dead letters, want %d", len(got), len(want))
	}
}

// textOf is s without NUL, invalid UTF-8 and U+FFFD: what every store keeps of a text.
func textOf(s string) string {
	s = strings.ToValidUTF8(s, "")
	return strings.NewReplacer("\x00", "", "\uFFFD", "").Replace(s)
}

func head(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
