package blobsink_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// Dead letters go to dead-letter/[prefix/]YYYY/MM/DD/HH/<id>.ndjson.gz by the UTC hour of FailedAt, one
// JSON object per letter with the raw bytes in base64; the sink's own prefix lists no dead letter.
func TestDeadLetterLayout(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		sink := newSink(t, store, blobsink.Config{Prefix: "audit"})
		first := sinktest.UnsafeDeadLetters(t0)
		second := sinktest.UnsafeDeadLetters(t0.Add(time.Hour).In(time.FixedZone("CET", 3600)))[:2]
		second[1].Raw = []byte("another line") // else the same letter as first[1]: stored once, in its first hour
		if err := sink.WriteDeadLetters(ctxT(t), append(slices.Clone(first), second...)); err != nil {
			t.Fatalf("WriteDeadLetters: %v", err)
		}
		if err := sink.Write(ctxT(t), subscribers.NewBatch(sinktest.Events(3, t0))); err != nil {
			t.Fatal(err)
		}
		want := []string{blobsink.DeadLetterName("audit", first), blobsink.DeadLetterName("audit", second)}
		for i, prefix := range []string{"dead-letter/audit/2025/03/04/05/", "dead-letter/audit/2025/03/04/06/"} {
			if !strings.HasPrefix(want[i], prefix) || !strings.HasSuffix(want[i], ".ndjson.gz") {
				t.Errorf("DeadLetterName = %q, want %s<id>.ndjson.gz", want[i], prefix)
			}
		}
		if got := list(t, store, blobsink.DeadLetterPrefix); !slices.Equal(got, want) {
			t.Fatalf("dead-letter blobs = %q, want %q", got, want)
		}
		if got := list(t, store, "audit/"); len(got) != 1 || blobsink.IsDeadLetter(got[0]) {
			t.Errorf("blobs under the sink's prefix = %q, want the one batch", got)
		}

		ndjson := gunzipped(t, store, want[0])
		lines := bytes.Split(bytes.TrimSuffix(ndjson, []byte("\n")), []byte("\n"))
		if len(lines) != len(first) {
			t.Fatalf("%d lines, want %d", len(lines), len(first))
		}
		for i, line := range lines {
			var fields map[string]any
			if err := json.Unmarshal(line, &fields); err != nil {
				t.Fatalf("line %d: %v", i, err)
			}
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range fields {
					if !yield(k) {
						return
					}
				}
			})
			if want := []string{"batch_id", "detail", "failed_at", "id", "raw_base64", "reason", "route"}; !slices.Equal(keys, want) {
				t.Errorf("line %d: fields %q, want %q", i, keys, want)
			}
			l := first[i]
			raw, err := base64.StdEncoding.DecodeString(fields["raw_base64"].(string))
			if err != nil || !bytes.Equal(raw, l.Raw) {
				t.Errorf("line %d: raw_base64 decodes to %d bytes (%v), want the %d bytes written", i, len(raw), err, len(l.Raw))
			}
			if (fields["id"] == nil) != (l.ID == uuid.Nil) || fields["failed_at"] != "2025-03-04T05:06:07Z" {
				t.Errorf("line %d: id %v, failed_at %v; want %s (null for none), %s", i, fields["id"], fields["failed_at"], l.ID, l.FailedAt)
			}
			if strings.ContainsRune(fields["detail"].(string), 0) {
				t.Errorf("line %d: detail %q keeps a NUL", i, fields["detail"])
			}
		}
		got := readDeadLetters(t, store, want[0])
		if len(got) != len(first) || !bytes.Equal(got[2].Raw, first[2].Raw) || got[0].ID != first[0].ID {
			t.Errorf("DecodeDeadLetters = %d letters, want the %d written", len(got), len(first))
		}
	})
}

// The same letters again, in any order and number of copies, within the hour, store nothing new.
func TestDeadLettersIdempotent(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		sink := newSink(t, store, blobsink.Config{})
		letters := sinktest.UnsafeDeadLetters(t0)
		if err := sink.WriteDeadLetters(ctxT(t), letters); err != nil {
			t.Fatal(err)
		}
		again := slices.Clone(letters)
		slices.Reverse(again)
		again = append(again, again...)
		for i := range again {
			again[i].FailedAt = again[i].FailedAt.Add(10 * time.Minute)
			again[i].BatchID = uuid.New()
		}
		if name := blobsink.DeadLetterName("", again); name != blobsink.DeadLetterName("", letters) {
			t.Errorf("DeadLetterName depends on order, copies or batch: %q, %q", name, blobsink.DeadLetterName("", letters))
		}
		if err := sink.WriteDeadLetters(ctxT(t), again); err != nil {
			t.Fatal(err)
		}
		names := list(t, store, "")
		if len(names) != 1 {
			t.Fatalf("blobs %q, want one", names)
		}
		got := readDeadLetters(t, store, names[0])
		if len(got) != len(letters) || got[0].BatchID != letters[0].BatchID {
			t.Errorf("%d letters stored (first batch %s), want the %d of the first write", len(got), got[0].BatchID, len(letters))
		}

		// A letter set that differs by one letter, or by the route of one, is another blob.
		other := slices.Clone(letters)
		other[1].Route = "archive"
		if blobsink.DeadLetterName("", other) == names[0] {
			t.Error("letters on another route have the same name")
		}
	})
}

func readDeadLetters(t *testing.T, store blobsink.Store, name string) []subscribers.DeadLetter {
	t.Helper()
	data, err := store.Get(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	letters, err := blobsink.DecodeDeadLetters(data)
	if err != nil {
		t.Fatal(err)
	}
	return letters
}

// A 10 MB line survives; a letter without a time takes now's hour.
func TestDeadLettersLargeAndNoTime(t *testing.T) {
	store := openDir(t)
	sink := newSink(t, store, blobsink.Config{})
	big := bytes.Repeat([]byte("\x00\xffbig"), 10<<20/5)
	before := time.Now().UTC()
	if err := sink.WriteDeadLetters(ctxT(t), []subscribers.DeadLetter{
		{ID: uuid.New(), Reason: subscribers.ReasonOversize, Raw: big},
	}); err != nil {
		t.Fatal(err)
	}
	names := list(t, store, "")
	if len(names) != 1 {
		t.Fatalf("blobs %q, want one", names)
	}
	if hour := before.Format("2006/01/02/15/"); !strings.Contains(names[0], hour) &&
		!strings.Contains(names[0], time.Now().UTC().Format("2006/01/02/15/")) {
		t.Errorf("name %q, want the hour of now %s", names[0], hour)
	}
	got := readDeadLetters(t, store, names[0])
	if len(got) != 1 || !bytes.Equal(got[0].Raw, big) || got[0].FailedAt.Before(before.Add(-time.Second)) {
		t.Errorf("read back %d letters, want the 10 MB one at now", len(got))
	}
}

func TestDeadLettersClosedAndEmpty(t *testing.T) {
	store := openDir(t)
	sink := newSink(t, store, blobsink.Config{})
	if err := sink.WriteDeadLetters(ctxT(t), nil); err != nil {
		t.Errorf("WriteDeadLetters(nil) = %v", err)
	}
	_ = sink.Close()
	if err := sink.WriteDeadLetters(ctxT(t), sinktest.UnsafeDeadLetters(t0)); !errors.Is(err, blobsink.ErrClosed) {
		t.Errorf("WriteDeadLetters after Close = %v, want ErrClosed", err)
	}
	if names := list(t, store, ""); len(names) != 0 {
		t.Errorf("blobs %q, want none", names)
	}
}

// Dead letters are not events: Decode refuses them, which is why readers skip IsDeadLetter names.
func TestDecodeRefusesDeadLetters(t *testing.T) {
	store := openDir(t)
	sink := newSink(t, store, blobsink.Config{})
	if err := sink.WriteDeadLetters(ctxT(t), sinktest.UnsafeDeadLetters(t0)); err != nil {
		t.Fatal(err)
	}
	names := list(t, store, "")
	if len(names) != 1 || !blobsink.IsDeadLetter(names[0]) || blobsink.IsDeadLetter("2025/01/01/00/x.ndjson.gz") {
		t.Fatalf("blobs %q, want one dead-letter blob", names)
	}
	data, err := store.Get(ctxT(t), names[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blobsink.Decode(data); err == nil {
		t.Error("Decode of a dead-letter blob = nil error")
	}
}
