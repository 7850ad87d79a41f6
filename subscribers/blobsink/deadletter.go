package blobsink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// DeadLetterPrefix starts the name of every dead-letter blob, before the sink's prefix:
// dead-letter/[prefix/]YYYY/MM/DD/HH/<id>.ndjson.gz. Listing a sink's prefix, or the hours of the
// events, never meets dead letters; only a listing of the whole store does, and IsDeadLetter tells
// them apart.
const DeadLetterPrefix = "dead-letter/"

// IsDeadLetter reports whether a stored object's name is that of a dead-letter blob, which holds dead
// letters (DecodeDeadLetters), not events (Decode).
func IsDeadLetter(name string) bool { return strings.HasPrefix(name, DeadLetterPrefix) }

var _ subscribers.DeadLetterSink = (*Sink)(nil)

// deadLetterJSON is one line of a dead-letter blob. Raw is kept as base64 so that any bytes survive.
type deadLetterJSON struct {
	ID        *uuid.UUID `json:"id"`       // null when the line could not be decoded
	BatchID   *uuid.UUID `json:"batch_id"` // null when no batch was formed
	Route     string     `json:"route"`
	Reason    string     `json:"reason"`
	Detail    string     `json:"detail"`
	FailedAt  time.Time  `json:"failed_at"`
	RawBase64 []byte     `json:"raw_base64"` // encoding/json writes []byte as standard base64
}

// WriteDeadLetters implements subscribers.DeadLetterSink: it stores the letters as gzip NDJSON, one
// JSON object per letter ({"id", "batch_id", "route", "reason", "detail", "failed_at", "raw_base64"}),
// one blob per UTC hour of their FailedAt, named by DeadLetterName, create-only like batches.
//
// A blob's name is derived from its letters, so writing the same letters again (in any order, with any
// BatchID, at any FailedAt within the same hour) finds the blob there and stores nothing; a letter that
// appears twice in one call is stored once. A letter is identified by its route, reason and event id
// or, without an id, its raw bytes. A zero FailedAt takes the time of the call. Raw is kept byte for
// byte; Route, Reason and Detail are text, where NUL and invalid UTF-8 become U+FFFD. Errors are
// classified like Write's (Classify).
//
// The letters' hour decides the blob's directory: a letter written again with a FailedAt in another
// hour is stored again, so a caller that retries should keep the FailedAt of its first attempt.
func (s *Sink) WriteDeadLetters(ctx context.Context, letters []subscribers.DeadLetter) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(letters) == 0 {
		return nil
	}
	now := time.Now().UTC()
	var (
		hours []int64
		parts [][]subscribers.DeadLetter
		seen  = make(map[[32]byte]struct{}, len(letters))
	)
	for _, l := range letters {
		k := letterKey(l)
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		if y := l.FailedAt.Year(); l.FailedAt.IsZero() || y < 1 || y > 9999 { // JSON times have 4-digit years
			l.FailedAt = now
		}
		h := hourOfTime(l.FailedAt)
		i := slices.Index(hours, h)
		if i < 0 {
			i = len(hours)
			hours = append(hours, h)
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], l)
	}
	objs := make([]object, len(parts))
	for i, p := range parts {
		data, err := encodeDeadLetters(p)
		if err != nil { // not expected: every field encodes
			return fmt.Errorf("blobsink: dead letters: %w", err)
		}
		objs[i] = object{name: DeadLetterName(s.cfg.Prefix, p), data: data}
	}
	return s.putAll(ctx, objs)
}

// DeadLetterName returns the name of the blob that holds letters, which must all have a FailedAt in
// one UTC hour (that of the first is used):
// dead-letter/[prefix/]YYYY/MM/DD/HH/<id>.ndjson.gz, where id is a UUIDv8 derived from the set of the
// letters' identities (route, reason, and event id or raw bytes), whatever their order and number of
// copies.
func DeadLetterName(prefix string, letters []subscribers.DeadLetter) string {
	var b strings.Builder
	b.WriteString(DeadLetterPrefix)
	if prefix != "" {
		b.WriteString(prefix)
		b.WriteByte('/')
	}
	if len(letters) > 0 {
		b.WriteString(letters[0].FailedAt.UTC().Format("2006/01/02/15/"))
	}
	b.WriteString(deadLettersID(letters).String())
	b.WriteString(Ext)
	return b.String()
}

// letterKey is a dead letter's identity: a digest of its route, its reason, and its event id or, when
// it has none, the digest of its raw bytes.
func letterKey(l subscribers.DeadLetter) [32]byte {
	h := sha256.New()
	for _, s := range []string{l.Route, l.Reason} {
		var n [8]byte
		for i := range n {
			n[i] = byte(uint64(len(s)) >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(s))
	}
	if l.ID != uuid.Nil {
		h.Write([]byte{1})
		h.Write(l.ID[:])
	} else {
		raw := sha256.Sum256(l.Raw)
		h.Write([]byte{0})
		h.Write(raw[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// deadLettersID derives a UUIDv8 from the set of the letters' keys, as event.BatchID does from event ids.
func deadLettersID(letters []subscribers.DeadLetter) uuid.UUID {
	keys := make([][]byte, len(letters))
	for i, l := range letters {
		k := letterKey(l)
		keys[i] = k[:]
	}
	return event.SetID(keys)
}

// encodeDeadLetters returns the gzip-compressed NDJSON of letters.
func encodeDeadLetters(letters []subscribers.DeadLetter) ([]byte, error) {
	var (
		buf bytes.Buffer
		zw  = gzip.NewWriter(&buf)
		enc = json.NewEncoder(zw) // one object and a newline per Encode
	)
	enc.SetEscapeHTML(false)
	for _, l := range letters {
		j := deadLetterJSON{Route: event.SafeString(l.Route), Reason: event.SafeString(l.Reason), Detail: event.SafeString(l.Detail),
			FailedAt: l.FailedAt.UTC(), RawBase64: l.Raw}
		if l.ID != uuid.Nil {
			j.ID = &l.ID
		}
		if l.BatchID != uuid.Nil {
			j.BatchID = &l.BatchID
		}
		if j.RawBase64 == nil {
			j.RawBase64 = []byte{} // "", not null: an empty line is still a line
		}
		if err := enc.Encode(&j); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeDeadLetters reads one stored dead-letter blob back into its letters: it gunzips data (data that
// is not gzip is taken as NDJSON as it is) and decodes each line. A line that is not a dead letter makes
// it fail, naming the line.
func DecodeDeadLetters(data []byte) ([]subscribers.DeadLetter, error) {
	var r io.Reader = bytes.NewReader(data)
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b { // gzip magic
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("blobsink: gunzip: %w", err)
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<30)
	var out []subscribers.DeadLetter
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var j deadLetterJSON
		if err := json.Unmarshal(line, &j); err != nil {
			return out, fmt.Errorf("blobsink: dead letter line %d: %w", n, err)
		}
		l := subscribers.DeadLetter{Route: j.Route, Reason: j.Reason, Detail: j.Detail, FailedAt: j.FailedAt,
			Raw: j.RawBase64}
		if j.ID != nil {
			l.ID = *j.ID
		}
		if j.BatchID != nil {
			l.BatchID = *j.BatchID
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("blobsink: dead letters: %w", err)
	}
	return out, nil
}

// hourOfTime returns the number of the UTC hour of t: whole hours since the Unix epoch.
func hourOfTime(t time.Time) int64 {
	sec := t.Unix()
	h := sec / 3600
	if sec%3600 < 0 {
		h--
	}
	return h
}
