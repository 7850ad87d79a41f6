package event

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestCompressRoundTrip(t *testing.T) {
	var chunk []byte
	for range 300 {
		line, err := benchEvent().AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		chunk = append(append(chunk, line...), '\n')
	}
	for _, enc := range []string{EncodingNone, EncodingS2, EncodingZstd} {
		out, err := Compress([]byte("kept"), chunk, enc)
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if enc == EncodingNone {
			if !bytes.Equal(out, chunk) {
				t.Fatal("none changed the payload")
			}
			continue
		}
		if string(out[:4]) != "kept" || len(out) > len(chunk)/3 {
			t.Fatalf("%s: %d bytes from %d (dst prefix %q): not appended, or not compressed", enc, len(out), len(chunk), out[:4])
		}
		back, err := Decompress(out[4:], enc)
		if err != nil || !bytes.Equal(back, chunk) {
			t.Fatalf("%s: round trip: %v", enc, err)
		}
		events, bad := DecodeLean(back)
		if len(events) != 300 || len(bad) > 0 {
			t.Fatalf("%s: %d events, bad %v", enc, len(events), bad)
		}
		// A corrupt payload is an error, not a panic or a partial chunk.
		broken := bytes.Clone(out[4:])
		broken[len(broken)/2] ^= 0xff
		broken = broken[:len(broken)-3]
		if got, err := Decompress(broken, enc); err == nil {
			t.Errorf("%s: corrupt payload decompressed to %d bytes, no error", enc, len(got))
		}
	}
	if _, err := Decompress(chunk, "lz5"); err == nil {
		t.Error("an unknown encoding was read")
	}
	if err := CheckEncoding("gzip"); err == nil {
		t.Error("CheckEncoding accepted gzip")
	}
}

// A small payload that claims (s2) or holds (zstd) more than MaxChunkBytes is refused before it is
// allocated or decompressed whole.
func TestDecompressRefusesBombs(t *testing.T) {
	claim := binary.AppendUvarint(nil, 1<<31) // an s2 block's header: its decoded length, 2 GiB
	claim = append(claim, make([]byte, 64)...)
	if _, err := Decompress(claim, EncodingS2); !errors.Is(err, ErrChunkTooLarge) {
		t.Errorf("s2 block claiming 2 GiB: %v, want ErrChunkTooLarge", err)
	}
	zeros := make([]byte, MaxChunkBytes+1)
	for _, enc := range []string{EncodingS2, EncodingZstd} {
		bomb, err := Compress(nil, zeros, enc)
		if err != nil {
			t.Fatal(err)
		}
		if len(bomb) > 4<<20 {
			t.Fatalf("%s: %d bytes of zeros compressed to %d", enc, len(zeros), len(bomb))
		}
		if _, err := Decompress(bomb, enc); !errors.Is(err, ErrChunkTooLarge) {
			t.Errorf("%s: %d compressed bytes of %d zeros: %v, want ErrChunkTooLarge", enc, len(bomb), len(zeros), err)
		}
	}
}
