package event

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// A chunk that crosses a broker may be compressed: its payload is then the chunk's NDJSON compressed
// as one block, and its MetadataFormat names how (ChunkFormatFor). In-process chunks are never
// compressed.
const (
	// EncodingS2 is an S2 block (github.com/klauspost/compress/s2, a faster Snappy): on the events of
	// sluice's benchmarks, 4.7 times smaller, 1.2 µs per event to compress and 0.3 µs to decompress.
	EncodingS2 = "s2"
	// EncodingZstd is a zstd frame at its fastest level: 8.2 times smaller, 2.5 µs and 0.6 µs.
	EncodingZstd = "zstd"
	// EncodingNone is the configuration's word for no compression (the format is ChunkFormat).
	EncodingNone = "none"
)

// MaxChunkBytes bounds the payload of a chunk once decompressed: a payload that says it holds more
// is refused whole before anything is allocated for it (a compressed payload a few bytes long can
// claim gigabytes; one that claims less than this costs a worker at most this much memory before it
// is found corrupt). A web node's chunks are far smaller: bus.forward.chunk.max_bytes (512 KiB by
// default) plus at most one event of capture.max_event_bytes (256 KiB), each at most half of this.
const MaxChunkBytes = 16 << 20

// ErrChunkTooLarge is the error of a compressed payload that decompresses to more than MaxChunkBytes.
var ErrChunkTooLarge = errors.New("decompressed chunk is over the limit")

// CheckEncoding returns an error unless encoding is one that Compress writes ("none" included).
func CheckEncoding(encoding string) error {
	switch encoding {
	case EncodingNone, EncodingS2, EncodingZstd:
		return nil
	}
	return fmt.Errorf("unknown compression %q (want %s, %s or %s)", encoding, EncodingNone, EncodingS2, EncodingZstd)
}

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

// zstdCodec returns the package's zstd encoder and decoder; EncodeAll and DecodeAll may be called
// from many goroutines at once.
func zstdCodec() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		zstdEnc, zstdErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if zstdErr == nil {
			zstdDec, zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxChunkBytes))
		}
	})
	return zstdEnc, zstdDec, zstdErr
}

// Compress appends payload, compressed with encoding, to dst and returns the result; with
// EncodingNone (or ""), payload itself.
func Compress(dst, payload []byte, encoding string) ([]byte, error) {
	switch encoding {
	case EncodingNone, "":
		return payload, nil
	case EncodingS2:
		n := s2.MaxEncodedLen(len(payload))
		if n < 0 {
			return nil, fmt.Errorf("compress %d bytes with %s: %w", len(payload), encoding, ErrChunkTooLarge)
		}
		if cap(dst)-len(dst) < n {
			dst = append(make([]byte, 0, len(dst)+n), dst...)
		}
		out := s2.Encode(dst[len(dst):len(dst)+n], payload)
		return dst[:len(dst)+len(out)], nil
	case EncodingZstd:
		enc, _, err := zstdCodec()
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(payload, dst), nil
	}
	return nil, CheckEncoding(encoding)
}

// Decompress returns the chunk that payload holds compressed with encoding (ChunkEncoding of the
// message's format; "" and "none" are not compressed: payload itself). It refuses, before allocating it, a chunk
// over MaxChunkBytes, and reports a corrupt payload.
func Decompress(payload []byte, encoding string) ([]byte, error) {
	switch encoding {
	case "", EncodingNone:
		return payload, nil
	case EncodingS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("%s payload: %w", encoding, err)
		}
		if n > MaxChunkBytes {
			return nil, fmt.Errorf("%s payload of %d bytes: %w (%d bytes, limit %d)", encoding, len(payload), ErrChunkTooLarge, n, MaxChunkBytes)
		}
		out, err := s2.Decode(make([]byte, n), payload)
		if err != nil {
			return nil, fmt.Errorf("%s payload: %w", encoding, err)
		}
		return out, nil
	case EncodingZstd:
		_, dec, err := zstdCodec()
		if err != nil {
			return nil, err
		}
		out, err := dec.DecodeAll(payload, nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) || len(out) > MaxChunkBytes {
			return nil, fmt.Errorf("%s payload of %d bytes: %w (limit %d)", encoding, len(payload), ErrChunkTooLarge, MaxChunkBytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%s payload: %w", encoding, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression %q (this sluice reads %s and %s)", encoding, EncodingS2, EncodingZstd)
}
