package console_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/console"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// linesReader reads back JSON lines, from a file target or from a writer's buffer: every line must be
// one whole event.
type linesReader func() ([]byte, error)

func (r linesReader) EventIDs(context.Context) (map[uuid.UUID]int, error) {
	data, err := r()
	if err != nil {
		return nil, err
	}
	events, bad := event.Decode(data)
	if len(bad) > 0 {
		return nil, fmt.Errorf("%d lines are not events, the first: %w", len(bad), bad[0])
	}
	ids := map[uuid.UUID]int{}
	for _, e := range events {
		ids[e.ID]++
	}
	return ids, nil
}

func TestConformance(t *testing.T) {
	t.Run("File", func(t *testing.T) {
		sinktest.Run(t, func(t *testing.T) (subscribers.Sink, sinktest.Reader) {
			path := filepath.Join(t.TempDir(), "events.ndjson")
			sink, err := console.New(console.Config{Target: path, Format: console.FormatJSON})
			if err != nil {
				t.Fatal(err)
			}
			return sink, linesReader(func() ([]byte, error) { return os.ReadFile(path) })
		})
	})
	t.Run("Writer", func(t *testing.T) {
		sinktest.Run(t, func(t *testing.T) (subscribers.Sink, sinktest.Reader) {
			var buf lockedBuffer
			sink, err := console.NewWriter(&buf, console.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return sink, linesReader(func() ([]byte, error) { return buf.Bytes(), nil })
		})
	})
}

// lockedBuffer is a bytes.Buffer that can be read while a sink writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *lockedBuffer) String() string { return string(b.Bytes()) }
