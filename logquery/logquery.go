// Package logquery owns reading sluice's logs back: the filter model (Filter: a time range, levels,
// statuses, a path glob, a route, a request or trace id, a substring of the message or error, a
// limit), its parsing from the words a user types (ParseTime, ParseLevels, ParseStatus), and the
// Source seam with its two implementations: PostgreSQL (Postgres: one SQL query with bind parameters
// only, served by the table's indexes, and Follow for new rows) and the archive (Archive: the gzip
// NDJSON blobs of the time range's hours, streamed line by line).
//
// Both sources hand over the same thing, events as package event decodes them with their JSON
// encoding in Raw, in time order, so that a caller renders them without knowing where they came
// from. Rendering is the caller's (the sluice logs command, a web page): this package prints nothing.
// It reads what the sinks wrote and writes nothing; it must not import the root sluice package nor the
// publishers.
package logquery

import (
	"cmp"
	"context"
	"errors"

	"github.com/sluicelog/sluice/event"
)

// Source reads stored events.
type Source interface {
	// Query calls fn for every event that matches f, oldest first. With f.Limit > 0 it hands over the
	// newest f.Limit matches only (still oldest first) and says in Result.More that older matches were
	// left out. An error of fn stops the query and is returned.
	Query(ctx context.Context, f Filter, fn func(*event.Event) error) (Result, error)
}

// Follower is a Source that can also tail: hand over the events stored after the query, as they come.
type Follower interface {
	Source
	// Follow runs Query, then calls fn for every matching event stored from then on, once each, until
	// ctx ends (it then returns ctx's error) or fn fails.
	Follow(ctx context.Context, f Filter, fn func(*event.Event) error) error
}

// Result says what a Query handed over.
type Result struct {
	// Events is how many events fn was called with.
	Events int
	// More is true when the limit left older matching events out.
	More bool
}

// ErrNoRange is returned by a source that cannot read without a lower time bound (the archive is read
// by the hour) for a filter without Since.
var ErrNoRange = errors.New("logquery: the archive needs a start time (since)")

// byTime orders events by time, then id (ids of one instant are UUIDv7s that sort by creation).
func byTime(a, b *event.Event) int {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c
	}
	return cmp.Compare(string(a.ID[:]), string(b.ID[:]))
}
