// Package console owns the sink a developer watches: the Sink that prints every event it is given, one
// line each, to stdout, stderr or an appended file, as the event's JSON (format "json", a JSON-lines
// stream that the other sinks' readers understand) or as a short human-readable line (format "text",
// optionally with a colored level).
//
// A batch is printed with one write call to the target, under the sink's lock, so the lines of
// concurrent batches never interleave. Text lines never carry raw control characters from event data:
// newlines, carriage returns, ESC and the other C0 and C1 controls, bidirectional and other invisible
// format characters, and invalid UTF-8 are escaped, so a hostile log line can neither forge lines nor
// send terminal escapes.
//
// A console cannot un-print, so Write is idempotent only as far as the sink remembers: it keeps the ids
// of the last RememberedBatches batches it printed and skips a batch it has already printed (a retry or
// a redelivery of the same batch), and prints an event that appears twice in one batch once. A batch
// older than that, a redelivery whose events are gathered into another batch, or a batch that a
// previous run of the process printed, is printed again: beyond that memory the console is
// at-least-once, which is what a developer watching it needs, not an archive.
//
// This package prints; it decides neither which events reach it nor when a batch is full (routing and
// the batching handler do). It must not import the publishers package nor the root sluice package.
package console

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicelog/sluice/subscribers"
)

// The targets that are not files, and the formats.
const (
	TargetStdout = "stdout"
	TargetStderr = "stderr"
	FormatJSON   = "json"
	FormatText   = "text"
)

// Config configures a Sink. Its zero value is valid: JSON lines to stdout (DefaultConfig).
type Config struct {
	// Target is where the lines go: "stdout" (the default when empty), "stderr", or the path of a
	// file, which is created if missing (mode 0644) and appended to; its directory must exist. A file
	// named like a stream is written as a path: "./stdout".
	Target string `yaml:"target"`
	// Format is "json" (the default when empty): one line per event, exactly the event's JSON
	// encoding (its Raw when it came off the bus); or "text": one human-readable line per event, the
	// time (RFC 3339 in UTC, to the millisecond), the level and, for an HTTP event, its method, path,
	// status, duration and request id, for an application event its message and attributes as
	// key=value; then its error, if any.
	Format string `yaml:"format"`
	// Color colors the level of the text format with ANSI escapes. It needs format "text": JSON
	// lines are never colored.
	Color bool `yaml:"color"`
}

// DefaultConfig returns the configuration that the zero Config stands for, with its defaults filled in.
func DefaultConfig() Config {
	return Config{}.WithDefaults()
}

// WithDefaults returns c with its empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Target == "" {
		c.Target = TargetStdout
	}
	if c.Format == "" {
		c.Format = FormatJSON
	}
	return c
}

// Validate reports the first invalid value, naming its key. Empty fields are valid (they stand for
// their defaults). Whether a file target can be opened is New's to say.
func (c Config) Validate() error {
	switch c.Format {
	case "", FormatJSON, FormatText:
	default:
		return fmt.Errorf("`format` (%q) must be %q or %q", c.Format, FormatJSON, FormatText)
	}
	if c.Color && c.Format != FormatText {
		return fmt.Errorf("`color` (true) needs `format` %q, not %q: JSON lines are never colored",
			FormatText, c.WithDefaults().Format)
	}
	t := c.Target
	switch {
	case t == "" || t == TargetStdout || t == TargetStderr:
	case strings.ContainsRune(t, 0):
		return fmt.Errorf("`target` (%q) must not contain a NUL byte", t)
	case strings.TrimSpace(t) != t:
		return fmt.Errorf("`target` (%q) must not start or end with spaces", t)
	case strings.EqualFold(t, TargetStdout) || strings.EqualFold(t, TargetStderr):
		return fmt.Errorf("`target` (%q) must be %q or %q in lower case (a file of that name is written as %q)",
			t, TargetStdout, TargetStderr, "./"+t)
	case strings.HasSuffix(t, "/") || strings.HasSuffix(t, string(filepath.Separator)):
		return fmt.Errorf("`target` (%q) must be %q, %q or the path of a file, not of a directory",
			t, TargetStdout, TargetStderr)
	}
	return nil
}

var (
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("console: sink is closed")
	// ErrInvalidEvent marks an event that cannot be printed whatever the retries: it is nil, or (format
	// "json") cannot be encoded. Write's error wraps it and is permanent; nothing of the batch is
	// printed.
	ErrInvalidEvent = subscribers.ErrInvalidEvent
)

// New returns a sink printing to cfg.Target, which it opens: a file target is created if missing and
// appended to, and Close closes it; stdout and stderr stay open.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("console: invalid config: %w", err)
	}
	cfg = cfg.WithDefaults()
	switch cfg.Target {
	case TargetStdout:
		return newSink(os.Stdout, nil, cfg), nil
	case TargetStderr:
		return newSink(os.Stderr, nil, cfg), nil
	}
	f, err := os.OpenFile(cfg.Target, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("console: `target` (%q): its directory %q must exist: %w",
				cfg.Target, filepath.Dir(cfg.Target), err)
		}
		return nil, fmt.Errorf("console: `target` (%q): %w", cfg.Target, err)
	}
	return newSink(f, f, cfg), nil
}

// NewWriter returns a sink printing to w, for tests and for programs that embed sluice; cfg.Target is
// not used. The caller keeps ownership of w: Close does not close it. w is given one Write call per
// batch, never two at once.
func NewWriter(w io.Writer, cfg Config) (*Sink, error) {
	if w == nil {
		return nil, errors.New("console: NewWriter needs a writer")
	}
	cfg.Target = ""
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("console: invalid config: %w", err)
	}
	cfg = cfg.WithDefaults()
	cfg.Target = "writer"
	return newSink(w, nil, cfg), nil
}
