package console_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/console"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

func TestDefaultConfig(t *testing.T) {
	want := console.Config{Target: "stdout", Format: "json"}
	if got := console.DefaultConfig(); got != want {
		t.Errorf("DefaultConfig() = %+v, want %+v", got, want)
	}
	if got := (console.Config{}).WithDefaults(); got != want {
		t.Errorf("Config{}.WithDefaults() = %+v, want %+v", got, want)
	}
	set := console.Config{Target: "stderr", Format: "text", Color: true}
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v", got)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		cfg  console.Config
		want string // "" for valid
	}{
		{console.Config{}, ""},
		{console.Config{Target: "stderr", Format: "text", Color: true}, ""},
		{console.Config{Target: "logs/app.ndjson"}, ""},
		{console.Config{Target: "./stdout"}, ""},
		{console.Config{Format: "xml"}, "`format` (\"xml\") must be \"json\" or \"text\""},
		{console.Config{Format: "TEXT"}, "`format` (\"TEXT\") must be \"json\" or \"text\""},
		{console.Config{Color: true}, "`color` (true) needs `format` \"text\", not \"json\""},
		{console.Config{Format: "json", Color: true}, "`color` (true) needs `format` \"text\", not \"json\""},
		{console.Config{Target: "STDOUT"}, "`target` (\"STDOUT\") must be \"stdout\" or \"stderr\" in lower case (a file of that name is written as \"./STDOUT\")"},
		{console.Config{Target: " stdout"}, "`target` (\" stdout\") must not start or end with spaces"},
		{console.Config{Target: "app\x00.log"}, "`target` (\"app\\x00.log\") must not contain a NUL byte"},
		{console.Config{Target: "logs/"}, "`target` (\"logs/\") must be \"stdout\", \"stderr\" or the path of a file, not of a directory"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: Validate() = %v, want nil", c.cfg, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("%+v: Validate() = %v, want %s", c.cfg, err, c.want)
		}
		if c.want == "" {
			continue
		}
		if _, err := console.New(c.cfg); err == nil || !strings.Contains(err.Error(), "invalid config: "+c.want) {
			t.Errorf("%+v: New() = %v, want the invalid config", c.cfg, err)
		}
	}
}

func TestNewWriterIgnoresTarget(t *testing.T) {
	if _, err := console.NewWriter(io.Discard, console.Config{Target: "STDOUT"}); err != nil {
		t.Errorf("NewWriter with an unused target: %v", err)
	}
	if _, err := console.NewWriter(io.Discard, console.Config{Format: "xml"}); err == nil || !strings.Contains(err.Error(), "`format`") {
		t.Errorf("NewWriter with format xml: %v, want an error naming `format`", err)
	}
	if _, err := console.NewWriter(nil, console.Config{}); err == nil {
		t.Error("NewWriter(nil) returned no error")
	}
}

func TestNameAndNotAVerifier(t *testing.T) {
	s, err := console.NewWriter(io.Discard, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "console" {
		t.Errorf("Name() = %q", s.Name())
	}
	// Write never ends without an answer (a context error means nothing was printed), so there is
	// nothing for a Verifier to settle, and a console cannot read back what a terminal shows.
	var sink subscribers.Sink = s
	if _, ok := sink.(subscribers.Verifier); ok {
		t.Error("the console sink is a subscribers.Verifier")
	}
}

func batchOf(n int, ts time.Time) subscribers.Batch {
	return subscribers.NewBatch(sinktest.Events(n, ts))
}

func TestFileTargetIsCreatedAndAppendedAcrossSinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.ndjson")
	first, second := batchOf(3, at), batchOf(2, at.Add(time.Hour))
	for i, b := range []subscribers.Batch{first, second} {
		s, err := console.New(console.Config{Target: path})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close of sink %d: %v", i, err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm&^0o644 != 0 || perm&0o600 != 0o600 {
		t.Errorf("file mode %v, want 0644 (less the umask)", perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	events, bad := event.Decode(data)
	if len(bad) > 0 {
		t.Fatalf("%d lines are not events: %v", len(bad), bad[0])
	}
	var got, want []uuid.UUID
	for _, e := range events {
		got = append(got, e.ID)
	}
	for _, e := range append(first.Events, second.Events...) {
		want = append(want, e.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("file holds events %v, want the first sink's then the second's: %v", got, want)
	}
}

// Two sinks (two processes, say) appending to one file at once: each batch is one write to a file
// opened for appending, so their lines never mix.
func TestTwoSinksOnOneFileKeepLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.ndjson")
	const batches, perBatch = 20, 50
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		s, err := console.New(console.Config{Target: path})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wg.Go(func() {
			for j := range batches {
				if errs[i] = s.Write(t.Context(), batchOf(perBatch, at.Add(time.Duration(i*batches+j)*time.Second))); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	events, bad := event.Decode(data)
	if len(bad) > 0 || len(events) != 2*batches*perBatch {
		t.Errorf("the file holds %d events and %d bad lines, want %d events", len(events), len(bad), 2*batches*perBatch)
	}
}

func TestFileTargetThatCannotBeOpened(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "app.log")
	_, err := console.New(console.Config{Target: missing})
	if err == nil || !strings.Contains(err.Error(), "`target`") || !strings.Contains(err.Error(), "must exist") ||
		!errors.Is(err, os.ErrNotExist) {
		t.Errorf("New(file in a missing directory) = %v, want an error naming `target` and its directory", err)
	}
	if _, err := console.New(console.Config{Target: dir}); err == nil || !strings.Contains(err.Error(), "`target`") {
		t.Errorf("New(a directory) = %v, want an error naming `target`", err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	file, err := console.New(console.Config{Target: path})
	if err != nil {
		t.Fatal(err)
	}
	closer := &closeRecorder{}
	writer, err := console.NewWriter(closer, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := console.New(console.Config{Target: "stdout"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*console.Sink{file, writer, stdout} {
		for range 2 {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if err := s.Write(t.Context(), batchOf(1, at)); !errors.Is(err, console.ErrClosed) {
			t.Errorf("Write after Close = %v, want ErrClosed", err)
		}
	}
	if closer.closed {
		t.Error("Close closed the writer given to NewWriter")
	}
	if _, err := os.Stdout.Stat(); err != nil {
		t.Errorf("Close closed stdout: %v", err)
	}
	if data, _ := os.ReadFile(path); len(data) != 0 {
		t.Errorf("the file holds %q after writes that failed", data)
	}
}

type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestSameBatchIsPrintedOnceUntilForgotten(t *testing.T) {
	var buf bytes.Buffer
	s, err := console.NewWriter(&buf, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	first := batchOf(3, at)
	reordered := subscribers.Batch{ID: first.ID, Events: []*event.Event{first.Events[2], first.Events[0], first.Events[1]}}
	for _, b := range []subscribers.Batch{first, first, reordered, {Events: first.Events}} { // no ID: derived
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Fatalf("a batch written four times printed %d lines, want 3", n)
	}
	// After RememberedBatches other batches, the first is forgotten: a replay prints it again.
	for i := range console.RememberedBatches {
		if err := s.Write(ctx, batchOf(1, at.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	buf.Reset()
	if err := s.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Errorf("a forgotten batch printed %d lines, want 3", n)
	}
}

func TestNilEventIsPermanentAndNothingIsPrinted(t *testing.T) {
	for _, format := range []string{console.FormatJSON, console.FormatText} {
		var buf bytes.Buffer
		s, err := console.NewWriter(&buf, console.Config{Format: format})
		if err != nil {
			t.Fatal(err)
		}
		events := append(sinktest.Events(3, at), nil)
		err = s.Write(t.Context(), subscribers.Batch{ID: uuid.New(), Events: events})
		if !subscribers.IsPermanent(err) || !errors.Is(err, console.ErrInvalidEvent) {
			t.Errorf("%s: Write(batch with a nil event) = %v, want permanent ErrInvalidEvent", format, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: printed %q", format, buf.String())
		}
	}
}

func TestCancelledContextPrintsNothing(t *testing.T) {
	var buf bytes.Buffer
	s, err := console.NewWriter(&buf, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := batchOf(5, at)
	if err := s.Write(ctx, b); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(cancelled) = %v, want context.Canceled", err)
	}
	if buf.Len() != 0 {
		t.Errorf("printed %q", buf.String())
	}
	if err := s.Write(t.Context(), b); err != nil || strings.Count(buf.String(), "\n") != 5 {
		t.Errorf("the batch after a cancelled write: %v, printed %d lines, want 5", err, strings.Count(buf.String(), "\n"))
	}
}

// A write waiting behind a blocked terminal gives up at its context's end, printing nothing.
func TestWriteWaitingForTheTargetHonoursItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &blockedWriter{release: make(chan struct{})}
		s, err := console.NewWriter(w, console.Config{})
		if err != nil {
			t.Fatal(err)
		}
		first, waiting := batchOf(2, at), batchOf(3, at)
		done := make(chan error, 1)
		go func() { done <- s.Write(context.Background(), first) }()
		synctest.Wait() // the first write is blocked in the target, holding the sink

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := s.Write(ctx, waiting); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Write behind a blocked one = %v, want context.DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("gave up after %v, want 5s", waited)
		}
		close(w.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if w.calls != 1 || strings.Count(w.buf.String(), "\n") != 2 {
			t.Errorf("%d write calls printed %q, want the first batch only", w.calls, w.buf.String())
		}
	})
}

type blockedWriter struct {
	release chan struct{}
	buf     bytes.Buffer
	calls   int
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	w.calls++
	return w.buf.Write(p)
}

// Many goroutines writing batches at once: each batch is one write call, calls never overlap, every
// line is one whole event, and every event is printed once.
func TestConcurrentBatchesAreOneWholeWriteEach(t *testing.T) {
	for _, format := range []string{console.FormatJSON, console.FormatText} {
		t.Run(format, func(t *testing.T) {
			const writers, batches, perBatch = 16, 20, 25
			w := &callRecorder{}
			s, err := console.NewWriter(w, console.Config{Format: format})
			if err != nil {
				t.Fatal(err)
			}
			want := map[uuid.UUID]bool{}
			all := make([][]subscribers.Batch, writers)
			for i := range all {
				for j := range batches {
					b := batchOf(perBatch, at.Add(time.Duration(i*batches+j)*time.Second))
					all[i] = append(all[i], b)
					for _, e := range b.Events {
						want[e.ID] = true
					}
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, writers)
			for i := range all {
				wg.Go(func() {
					for _, b := range all[i] {
						if err := s.Write(t.Context(), b); err != nil {
							errs[i] = err
							return
						}
					}
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if w.overlapped.Load() {
				t.Error("two write calls overlapped")
			}
			if len(w.calls) != writers*batches {
				t.Fatalf("%d write calls, want one per batch: %d", len(w.calls), writers*batches)
			}
			lines := 0
			for i, call := range w.calls {
				body, ok := bytes.CutSuffix(call, []byte("\n"))
				if !ok {
					t.Fatalf("call %d does not end with a newline", i)
				}
				callLines := bytes.Split(body, []byte("\n"))
				if len(callLines) != perBatch {
					t.Fatalf("call %d has %d lines, want %d", i, len(callLines), perBatch)
				}
				for _, line := range callLines {
					lines++
					if format == console.FormatText {
						if _, err := time.Parse("2006-01-02T15:04:05.000Z", string(line[:24])); err != nil {
							t.Fatalf("line %q does not start with its time", line)
						}
						continue
					}
					events, bad := event.Decode(line)
					if len(bad) > 0 || len(events) != 1 || !want[events[0].ID] {
						t.Fatalf("line %q is not one of the events written (%v)", line, bad)
					}
					delete(want, events[0].ID)
				}
			}
			if lines != writers*batches*perBatch {
				t.Errorf("%d lines, want %d", lines, writers*batches*perBatch)
			}
			if format == console.FormatJSON && len(want) > 0 {
				t.Errorf("%d events not printed", len(want))
			}
		})
	}
}

// callRecorder keeps every write call's bytes and notices when two calls overlap.
type callRecorder struct {
	mu         sync.Mutex
	calls      [][]byte
	inWrite    atomic.Int32
	overlapped atomic.Bool
}

func (r *callRecorder) Write(p []byte) (int, error) {
	if r.inWrite.Add(1) != 1 {
		r.overlapped.Store(true)
	}
	defer r.inWrite.Add(-1)
	r.mu.Lock()
	r.calls = append(r.calls, bytes.Clone(p))
	r.mu.Unlock()
	return len(p), nil
}

func TestFailedWriteIsTransientAndRetried(t *testing.T) {
	w := &failingWriter{fail: 1}
	s, err := console.NewWriter(w, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b := batchOf(4, at)
	err = s.Write(t.Context(), b)
	if err == nil || subscribers.IsPermanent(err) || !strings.Contains(err.Error(), b.ID.String()) {
		t.Errorf("Write to a failing target = %v, want a transient error naming the batch", err)
	}
	if err := s.Write(t.Context(), b); err != nil { // not remembered as printed: the retry prints it
		t.Fatal(err)
	}
	if n := strings.Count(w.buf.String(), "\n"); n != 4 {
		t.Errorf("the retry printed %d lines, want 4", n)
	}
}

type failingWriter struct {
	fail int
	buf  bytes.Buffer
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.fail > 0 {
		w.fail--
		return 0, errors.New("disk full")
	}
	return w.buf.Write(p)
}
