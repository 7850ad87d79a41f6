package logquery

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// ArchiveConfig configures an Archive source. Its zero value is valid: every field has a default.
type ArchiveConfig struct {
	// Prefix is the path inside the store that the archive's blob names start with: the archive
	// route's prefix option (slash-separated, no leading or trailing slash). Default none.
	Prefix string
	// Concurrency is how many blobs are read at once. Default 4.
	Concurrency int
	// MaxLineBytes bounds one line (one event) of a blob; a longer line fails the query, naming its
	// blob. Default 16 MiB (events are at most capture.max_event_bytes, 256 KiB by default).
	MaxLineBytes int
	// MaxHeldBytes bounds the matching events held at once to put them in time order: the matches of
	// one hour without a limit, the newest Limit ones with. A query that would hold more fails, saying
	// which hour: narrow the filter or set a limit. Default 256 MiB.
	MaxHeldBytes int64
}

// Defaults of ArchiveConfig.
const (
	DefaultConcurrency  = 4
	DefaultMaxLineBytes = 16 << 20
	DefaultMaxHeldBytes = 256 << 20
)

func (c *ArchiveConfig) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	if c.MaxHeldBytes == 0 {
		c.MaxHeldBytes = DefaultMaxHeldBytes
	}
}

// Validate reports the first invalid field, naming its key. Zero fields stand for their defaults.
func (c ArchiveConfig) Validate() error {
	if c.Prefix != "" {
		if err := (blobsink.Config{Prefix: c.Prefix}).Validate(); err != nil {
			return err
		}
	}
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("`concurrency` (%d) must not be negative", c.Concurrency)
	case c.MaxLineBytes < 0:
		return fmt.Errorf("`max_line_bytes` (%d) must not be negative", c.MaxLineBytes)
	case c.MaxHeldBytes < 0:
		return fmt.Errorf("`max_held_bytes` (%d) must not be negative", c.MaxHeldBytes)
	}
	return nil
}

// Archive reads the events of sluice's archive (blobsink's): gzip NDJSON blobs under
// [prefix/]YYYY/MM/DD/HH/ by the UTC hour of their events. It relies on that layout only, not on the
// names below an hour. A query lists the hours of its time range, streams each blob line by line
// (Concurrency at a time) and decodes only the lines that can match; memory is a few buffers per blob
// being read, plus the matches held to be put in time order (MaxHeldBytes).
type Archive struct {
	store blobsink.Store
	cfg   ArchiveConfig
}

var _ Source = (*Archive)(nil)

// NewArchive returns a source reading store, which stays the caller's.
func NewArchive(store blobsink.Store, cfg ArchiveConfig) (*Archive, error) {
	if store == nil {
		return nil, errors.New("logquery: NewArchive needs a store")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("logquery: invalid config: %w", err)
	}
	return &Archive{store: store, cfg: cfg}, nil
}

// ArchiveResult is what a query of the archive read, besides what it handed over.
type ArchiveResult struct {
	Result
	// Blobs and Lines count what was read.
	Blobs, Lines int
	// BadLines counts the lines skipped as not events: lines that are not JSON, and lines that match
	// the filter but are not valid events. FirstBad names the first one's blob and line, and why.
	BadLines int
	FirstBad string
}

// Query implements Source. Without a limit it goes through the hours oldest first, handing over each
// hour's matches in time order; with a limit it goes newest first and stops at the first hour that
// leaves it with more than the limit. f.Since is required (ErrNoRange); a zero f.Until is now.
func (a *Archive) Query(ctx context.Context, f Filter, fn func(*event.Event) error) (Result, error) {
	r, err := a.Scan(ctx, f, fn)
	return r.Result, err
}

// Scan is Query, and says what it read.
func (a *Archive) Scan(ctx context.Context, f Filter, fn func(*event.Event) error) (ArchiveResult, error) {
	var res ArchiveResult
	if err := f.Validate(); err != nil {
		return res, err
	}
	if f.Since.IsZero() {
		return res, ErrNoRange
	}
	until := f.Until
	if until.IsZero() {
		until = time.Now()
	}
	m, err := newMatcher(f)
	if err != nil {
		return res, err
	}
	var hours []time.Time
	for h := f.Since.UTC().Truncate(time.Hour); h.Before(until); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	var held heldEvents
	if f.Limit == 0 {
		for _, h := range hours {
			if err := a.scanHour(ctx, m, h, &res, func(e *event.Event) error {
				return held.add(e, a.cfg.MaxHeldBytes, h)
			}); err != nil {
				return res, err
			}
			slices.SortFunc(held.events, byTime)
			for _, e := range held.events {
				res.Events++
				if err := fn(e); err != nil {
					return res, err
				}
			}
			held = heldEvents{}
		}
		return res, nil
	}
	keep := f.Limit + 1 // one more says that there are more
	for _, h := range slices.Backward(hours) {
		if err := a.scanHour(ctx, m, h, &res, func(e *event.Event) error {
			if err := held.add(e, a.cfg.MaxHeldBytes, h); err != nil {
				return err
			}
			if len(held.events) >= 2*keep {
				held.newest(keep)
			}
			return nil
		}); err != nil {
			return res, err
		}
		held.newest(keep)
		if len(held.events) == keep {
			break // every older hour holds older events only
		}
	}
	events := held.events
	if len(events) > f.Limit {
		events, res.More = events[1:], true
	}
	for _, e := range events {
		res.Events++
		if err := fn(e); err != nil {
			return res, err
		}
	}
	return res, nil
}

// heldEvents are matches waiting to be put in time order.
type heldEvents struct {
	events []*event.Event
	bytes  int64
}

func (h *heldEvents) add(e *event.Event, max int64, hour time.Time) error {
	h.events = append(h.events, e)
	h.bytes += int64(len(e.Raw))
	if h.bytes > max {
		return fmt.Errorf("logquery: the matches of the archive's hour %s are more than %d MiB to put in "+
			"time order: narrow the filter or set a limit", hour.Format("2006-01-02T15Z"), max>>20)
	}
	return nil
}

// newest sorts the events by time and keeps the newest n.
func (h *heldEvents) newest(n int) {
	slices.SortFunc(h.events, byTime)
	if len(h.events) > n {
		drop := h.events[:len(h.events)-n]
		for _, e := range drop {
			h.bytes -= int64(len(e.Raw))
		}
		h.events = slices.Clone(h.events[len(h.events)-n:])
	}
}

// hourPrefix is the prefix of the blobs of the hour h.
func (a *Archive) hourPrefix(h time.Time) string {
	p := h.UTC().Format("2006/01/02/15/")
	if a.cfg.Prefix != "" {
		p = a.cfg.Prefix + "/" + p
	}
	return p
}

// scanHour reads the blobs of hour h, Concurrency at a time, and calls emit (from this goroutine) with
// each matching event.
func (a *Archive) scanHour(ctx context.Context, m *matcher, h time.Time, res *ArchiveResult, emit func(*event.Event) error) error {
	names, err := a.store.List(ctx, a.hourPrefix(h))
	if err != nil {
		return fmt.Errorf("logquery: list the archive's hour %s: %w", h.Format("2006-01-02T15Z"), err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	matches := make(chan *event.Event, 64)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		mu.Unlock()
		cancel()
	}
	for range min(a.cfg.Concurrency, len(names)) {
		wg.Go(func() {
			for name := range work {
				st, err := a.scanBlob(ctx, m, name, matches)
				mu.Lock()
				res.Blobs++
				res.Lines += st.lines
				if st.bad > 0 && res.BadLines == 0 {
					res.FirstBad = st.firstBad
				}
				res.BadLines += st.bad
				mu.Unlock()
				if err != nil {
					fail(err)
				}
			}
		})
	}
	go func() {
		defer close(matches)
		defer wg.Wait()
		defer close(work)
		for _, n := range names {
			select {
			case work <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	for e := range matches {
		if ctx.Err() == nil { // cancelled by the first failure: drain the rest
			if err := emit(e); err != nil {
				fail(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if firstEr != nil {
		return firstEr
	}
	return ctx.Err()
}

// blobStats is what one blob held.
type blobStats struct {
	lines, bad int
	firstBad   string
}

// scanBlob streams one blob and sends its matching events.
func (a *Archive) scanBlob(ctx context.Context, m *matcher, name string, out chan<- *event.Event) (blobStats, error) {
	var st blobStats
	body, err := blobsink.OpenObject(ctx, a.store, name)
	if err != nil {
		return st, fmt.Errorf("logquery: read %s: %w", name, err)
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 64<<10)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return st, fmt.Errorf("logquery: gunzip %s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), a.cfg.MaxLineBytes)
	var f fields
	for sc.Scan() {
		line := sc.Bytes()
		st.lines++
		if len(bytes.TrimSpace(line)) == 0 || !m.mayMatch(line) {
			continue
		}
		f = fields{}
		if err := json.Unmarshal(line, &f); err != nil {
			st.bad++
			if st.bad == 1 {
				st.firstBad = fmt.Sprintf("%s line %d: %v", name, st.lines, err)
			}
			continue
		}
		if !m.match(&f) {
			continue
		}
		events, bad := event.Decode(bytes.Clone(line))
		if len(bad) > 0 {
			st.bad++
			if st.bad == 1 {
				st.firstBad = fmt.Sprintf("%s line %d: %v", name, st.lines, bad[0].Err)
			}
			continue
		}
		select {
		case out <- events[0]:
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("logquery: read %s after line %d: %w", name, st.lines, err)
	}
	return st, nil
}
