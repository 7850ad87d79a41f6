package blobsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
)

// Store keeps named, immutable objects: Azure Blob Storage (AzureStore) or a local directory (DirStore).
// Names are slash-separated paths such as "2025/01/02/15/<batch id>.ndjson.gz". Implementations must be
// safe for concurrent use.
type Store interface {
	// Put stores data under name unless an object of that name already exists. It returns nil when the
	// object was written and also when it already existed: an object is never replaced, so a retried
	// or replayed write cannot store a second, different copy. contentType and contentEncoding describe
	// data to stores that keep such properties. An error that is the data's fault (the store refuses
	// the body itself) is marked subscribers.Permanent by the store; the sink classifies the rest
	// (Classify).
	Put(ctx context.Context, name string, data []byte, contentType, contentEncoding string) error
	// Get returns the bytes stored under name, as they were put (still gzip-compressed), or an error
	// wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// List returns the names of all objects whose names start with prefix, in lexical order.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Opener is a Store that can also stream an object, so that a reader holds a buffer of it, not all of
// it: DirStore and the Azure store are. OpenObject uses it.
type Opener interface {
	// Open returns a reader of the bytes stored under name, as they were put (still gzip-compressed),
	// or an error wrapping ErrNotFound. The caller closes it.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
}

// OpenObject returns a reader of the object stored under name: the store's Open when it is an Opener,
// else the bytes of its Get.
func OpenObject(ctx context.Context, s Store, name string) (io.ReadCloser, error) {
	if o, ok := s.(Opener); ok {
		return o.Open(ctx, name)
	}
	b, err := s.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// ErrNotFound is wrapped by the error of Get when no object has the name.
var ErrNotFound = errors.New("blobsink: object not found")

// Decode reads one stored blob back into its events: it gunzips data (data that is not gzip, such as
// what an HTTP client decompressed on the way, is taken as NDJSON as it is) and decodes each line. A
// line that is not a valid event makes it fail, naming the line.
func Decode(data []byte) ([]*event.Event, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b { // gzip magic
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("blobsink: gunzip: %w", err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("blobsink: gunzip: %w", err)
		}
	}
	events, bad := event.Decode(data)
	if len(bad) > 0 {
		return events, fmt.Errorf("blobsink: %w", bad[0])
	}
	return events, nil
}
