// Package blobsink owns sluice's archive: the Sink that writes every event it is given to blob storage
// as gzip-compressed NDJSON, one blob per batch and UTC hour, and the two stores it writes to: Azure Blob
// Storage (AzureStore) and a local directory (DirStore, the embedded default).
//
// A blob is named by its events' hour and a batch id derived from its events,
// [prefix/]YYYY/MM/DD/HH/<batch id>.ndjson.gz, so its name is fixed before the first upload, and a
// retried or replayed batch maps to the same names; stores create an object only if its name is free,
// so a replay never stores a second copy.
//
// Write's errors are classified (Classify): permanent when the data is at fault, so that the batcher
// splits the batch and dead-letters the bad events, which WriteDeadLetters stores under
// dead-letter/[prefix/]YYYY/MM/DD/HH/<id>.ndjson.gz; transient otherwise.
//
// Retention (Prune, PruneStore) deletes whole hour prefixes older than a cutoff; it relies on the
// YYYY/MM/DD/HH/ layout only, never on the names of the blobs inside an hour.
//
// This package decides neither which events are archived nor when a batch is full (routing and the
// batching handler do); it must not import the publishers package nor the root sluice package.
package blobsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// What a blob holds, as Content-Type and Content-Encoding.
const (
	ContentType     = "application/x-ndjson"
	ContentEncoding = "gzip"
	// Ext ends every blob's name.
	Ext = ".ndjson.gz"
)

// Config configures a Sink. Its zero value is valid: no prefix and the defaults below.
type Config struct {
	// Prefix is an optional path inside the store that every blob name starts with, such as
	// "audit" for a second route into the same container: slash-separated, without a leading or
	// trailing slash.
	Prefix string
	// WriteTimeout bounds the storing of one blob, retries included. Default 30s.
	WriteTimeout time.Duration
	// Concurrency is how many blobs of one batch (a batch spanning several hours makes one blob per
	// hour) are stored at once. Default 4.
	Concurrency int
	// GzipLevel is the gzip compression level, 1 (fastest) to 9 (smallest). Default 2: on realistic
	// events (BenchmarkGzip) it compresses 1.7 times as fast as the default level 6 for 88% of its
	// ratio (7.0 against 8.0), and the CPU it saves is the request path's on a shared machine.
	GzipLevel int
}

// Defaults of Config.
const (
	DefaultWriteTimeout = 30 * time.Second
	DefaultConcurrency  = 4
	DefaultGzipLevel    = 2
)

// DefaultConfig returns the configuration that the zero Config stands for, with its defaults filled in.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.GzipLevel == 0 {
		c.GzipLevel = DefaultGzipLevel
	}
}

// A blob's name is at most 1024 characters in Azure, and a file name at most 255 bytes on common file
// systems; the rest of a name (dead-letter/, the hour, the id and Ext) takes less than 100.
const (
	maxPrefix        = 900
	maxPrefixSegment = 255
)

// Validate reports the first invalid value, naming its key. Zero values stand for the defaults.
func (c Config) Validate() error {
	if c.GzipLevel < 0 || c.GzipLevel > 9 {
		return fmt.Errorf("`gzip_level` (%d) must be 1 (fastest) to 9 (smallest)", c.GzipLevel)
	}
	if c.Prefix != "" {
		for _, seg := range strings.Split(c.Prefix, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
				return fmt.Errorf("`prefix` (%q) must be slash-separated names, "+
					"without a leading or trailing slash, '.', '..' or backslashes", c.Prefix)
			}
			if len(seg) > maxPrefixSegment {
				return fmt.Errorf("`prefix` (%q) has a name longer than %d bytes", c.Prefix, maxPrefixSegment)
			}
		}
		if len(c.Prefix) > maxPrefix {
			return fmt.Errorf("`prefix` (%q) is longer than %d bytes", c.Prefix, maxPrefix)
		}
		if first, _, _ := strings.Cut(c.Prefix, "/"); first+"/" == DeadLetterPrefix {
			return fmt.Errorf("`prefix` (%q) must not start with %q: dead letters are stored there", c.Prefix, DeadLetterPrefix)
		}
	}
	if c.WriteTimeout < 0 {
		return fmt.Errorf("`write_timeout` (%s) must not be negative", c.WriteTimeout)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("`concurrency` (%d) must not be negative", c.Concurrency)
	}
	return nil
}

var (
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("blobsink: sink is closed")
	// ErrInvalidEvent marks an event that cannot be stored whatever the retries: it is nil, or cannot be
	// encoded as JSON. Write's error wraps it and is permanent; nothing of the batch is stored.
	ErrInvalidEvent = subscribers.ErrInvalidEvent
)

// Sink writes batches of events to a Store, one blob per batch and UTC hour. It implements
// subscribers.Sink and is safe for concurrent use.
type Sink struct {
	store  Store
	cfg    Config
	closed atomic.Bool
	// encoders keeps a few encoders (gzip state and buffers) from one write to the next; unlike a
	// sync.Pool it is not emptied by every garbage collection, which made each batch build them again.
	encoders chan *encoder
}

var _ subscribers.Sink = (*Sink)(nil)

// New returns a sink writing to store. The caller keeps ownership of store: Close does not close it.
func New(store Store, cfg Config) (*Sink, error) {
	if store == nil {
		return nil, errors.New("blobsink: New needs a store")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("blobsink: invalid config: %w", err)
	}
	return &Sink{store: store, cfg: cfg, encoders: make(chan *encoder, 2*cfg.Concurrency)}, nil
}

// Name implements subscribers.Sink.
func (s *Sink) Name() string { return "blob" }

// Close implements subscribers.Sink: later Writes fail with ErrClosed. Writes in progress finish.
func (s *Sink) Close() error {
	s.closed.Store(true)
	return nil
}

// Write implements subscribers.Sink: it splits the batch by the UTC hour of its events' times and stores
// each part as one blob named by BlobName, several parts at once. It returns nil only when every part is
// stored (or was stored before: a replay). An event that appears twice in the batch is stored once.
//
// Its errors are classified (see Classify). Every part is encoded before any is uploaded, so an event
// that cannot be encoded (a nil event, an attribute JSON cannot encode) fails Write permanently with
// ErrInvalidEvent and nothing of the batch stored: splitting the batch then finds the event without
// leaving blobs of a larger set of events behind (a blob is named by its events, so those would be
// second copies of the events the halves store). When the store refuses one part permanently after
// another part was stored, Write is permanent too, and that other part's events may be stored again
// under the names of the halves; the store's permanent refusals (a blob too large) are rare.
func (s *Sink) Write(ctx context.Context, b subscribers.Batch) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if empty, err := b.Check("blobsink"); empty || err != nil {
		return err
	}
	parts := splitByHour(b.Events)
	objs := make([]object, len(parts))
	defer func() {
		for _, o := range objs {
			if o.enc != nil {
				s.putEncoder(o.enc)
			}
		}
	}()
	for i, p := range parts {
		enc := s.getEncoder()
		objs[i].enc = enc
		data, err := enc.encode(p)
		if err != nil {
			return subscribers.Permanent(fmt.Errorf("blobsink: batch %s: %w: %w", b.ID, ErrInvalidEvent, err))
		}
		objs[i].name, objs[i].data = BlobName(s.cfg.Prefix, p), data
	}
	return s.putAll(ctx, objs)
}

// object is one blob to store.
type object struct {
	name string
	data []byte
	enc  *encoder // holds data; back to the pool once stored
}

// putAll stores the objects, at most Config.Concurrency at once, and returns their errors classified:
// permanent only when every failure is.
func (s *Sink) putAll(ctx context.Context, objs []object) error {
	errs := make([]error, len(objs))
	if len(objs) == 1 {
		errs[0] = s.put(ctx, objs[0])
	} else {
		sem := make(chan struct{}, s.cfg.Concurrency)
		var wg sync.WaitGroup
		for i, o := range objs {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				errs[i] = s.put(ctx, o)
			})
		}
		wg.Wait()
	}
	return joinClassified(errs)
}

// put stores one object within the write timeout.
func (s *Sink) put(ctx context.Context, o object) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	return s.store.Put(ctx, o.name, o.data, ContentType, ContentEncoding)
}

// joinClassified classifies each error and joins them: the result is permanent when every non-nil error
// is, and otherwise transient, with no permanent mark left inside (errors.As would find it).
func joinClassified(errs []error) error {
	var causes []error
	permanent := true
	for _, err := range errs {
		if err == nil {
			continue
		}
		err = Classify(err)
		var p *subscribers.PermanentError
		if errors.As(err, &p) {
			err = p.Err
		} else {
			permanent = false
		}
		causes = append(causes, err)
	}
	switch {
	case len(causes) == 0:
		return nil
	case permanent:
		return subscribers.Permanent(errors.Join(causes...))
	case len(causes) == 1:
		return causes[0]
	}
	return errors.Join(causes...)
}

// BlobName returns the name of the blob that holds events, which must all be of one UTC hour (that of
// the first is used): [prefix/]YYYY/MM/DD/HH/<event.BatchID(events)>.ndjson.gz.
func BlobName(prefix string, events []*event.Event) string {
	buf := make([]byte, 0, len(prefix)+1+14+36+len(Ext))
	if prefix != "" {
		buf = append(buf, prefix...)
		buf = append(buf, '/')
	}
	if len(events) > 0 {
		buf = events[0].TS.UTC().AppendFormat(buf, "2006/01/02/15/")
	}
	buf = append(buf, event.BatchID(events).String()...)
	return string(append(buf, Ext...))
}

// splitByHour groups events by the UTC hour of their time, keeping their order within each group; the
// groups are in the order of their first event. A batch within one hour (the usual case) is returned
// as it is, without copying.
func splitByHour(events []*event.Event) [][]*event.Event {
	first := hourOf(events[0])
	oneHour := true
	for _, e := range events[1:] {
		if hourOf(e) != first {
			oneHour = false
			break
		}
	}
	if oneHour {
		return [][]*event.Event{events}
	}
	var (
		hours []int64
		parts [][]*event.Event
	)
	for _, e := range events {
		h := hourOf(e)
		i := 0
		for i < len(hours) && hours[i] != h {
			i++
		}
		if i == len(hours) {
			hours = append(hours, h)
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], e)
	}
	return parts
}

// hourOf returns the number of the UTC hour of an event's time (see hourOfTime).
func hourOf(e *event.Event) int64 { return hourOfTime(e.TS) }

// encoder turns events into a gzip NDJSON blob, reusing its buffers and compressor across batches.
type encoder struct {
	ndjson []byte
	gz     bytes.Buffer
	zw     *gzip.Writer
	seen   map[uuid.UUID]struct{}
}

// maxPooledBytes bounds the buffers that go back to the pool, so one huge batch does not pin its memory.
const maxPooledBytes = 8 << 20

func (s *Sink) getEncoder() *encoder {
	select {
	case e := <-s.encoders:
		return e
	default:
	}
	zw, err := gzip.NewWriterLevel(nil, s.cfg.GzipLevel)
	if err != nil { // Validate has checked the level
		panic(err)
	}
	return &encoder{zw: zw, seen: map[uuid.UUID]struct{}{}}
}

func (s *Sink) putEncoder(e *encoder) {
	if cap(e.ndjson) > maxPooledBytes || e.gz.Cap() > maxPooledBytes || len(e.seen) > maxPooledEvents {
		return
	}
	select {
	case s.encoders <- e:
	default:
	}
}

// maxPooledEvents bounds the id set that goes back to the pool.
const maxPooledEvents = 1 << 14

// encode returns the gzip-compressed NDJSON of events, each event id once (an at-least-once bus can
// deliver an event twice into one batch); the bytes are valid until the encoder is reused.
func (enc *encoder) encode(events []*event.Event) ([]byte, error) {
	clear(enc.seen)
	need := 0
	for _, e := range events {
		need += len(e.Raw) + 1 // events decoded or encoded in process carry their encoding
	}
	buf := enc.ndjson[:0]
	if cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	for _, e := range events {
		if _, dup := enc.seen[e.ID]; dup {
			continue
		}
		enc.seen[e.ID] = struct{}{}
		var err error
		if buf, err = e.AppendJSON(buf); err != nil {
			return nil, err
		}
		buf = append(buf, '\n')
	}
	enc.ndjson = buf
	enc.gz.Reset()
	enc.zw.Reset(&enc.gz)
	if _, err := enc.zw.Write(buf); err != nil {
		return nil, err
	}
	if err := enc.zw.Close(); err != nil {
		return nil, err
	}
	return enc.gz.Bytes(), nil
}

// Stored reports whether every blob of the batch is in the store (subscribers.Verifier): blobs are
// put whole or not at all, so a write cut without an answer stored each blob of it or not.
func (s *Sink) Stored(ctx context.Context, b subscribers.Batch) (bool, error) {
	for _, p := range splitByHour(b.Events) {
		name := BlobName(s.cfg.Prefix, p)
		names, err := s.store.List(ctx, name)
		if err != nil {
			return false, fmt.Errorf("blobsink: look up batch %s: %w", b.ID, err)
		}
		if !slices.Contains(names, name) {
			return false, nil
		}
	}
	return true, nil
}
