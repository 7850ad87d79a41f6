package subscribers

import (
	"context"
	"errors"
	"time"
)

// Pruner is implemented by an opened sink type (Opened) whose store keeps events by time and can
// remove what is older than a retention: pgsink drops whole day partitions of application_logs,
// blobsink deletes whole hour prefixes (YYYY/MM/DD/HH/) of the archive. The running pipeline calls it
// every hour and `sluice prune` once: both use this one seam, and a future store plugs in by
// implementing it.
type Pruner interface {
	// Retention is how long the store keeps events (its `retention` key); 0 keeps them forever, and
	// the pipeline does not prune it.
	Retention() time.Duration
	// Prune removes every unit of storage (a partition, an hour prefix) whose whole time range ends at
	// or before cutoff, and nothing else: a unit that holds one event at or after cutoff is kept
	// whole. With dryRun it removes nothing and reports what it would remove. It must honour ctx; the
	// units removed before an error are in the report. Pruning twice is harmless.
	Prune(ctx context.Context, cutoff time.Time, dryRun bool) (PruneReport, error)
}

// ValidRetention checks a retention setting: 0 (keep forever), or at least an hour (the archive
// removes whole hours; a shorter retention is a typo such as 720s for 720h).
func ValidRetention(d time.Duration) error {
	if d != 0 && d < time.Hour {
		return errors.New("must be 0 (keep forever) or at least 1h, e.g. 720h for 30 days")
	}
	return nil
}

// PruneReport is what one Prune removed, or would remove with DryRun.
type PruneReport struct {
	Sink    string // the sink type ("postgres", "blob")
	Cutoff  time.Time
	DryRun  bool
	Removed []PrunedUnit // in time order within each store
	// Oldest is the time of the oldest data kept (the first event, or the start of the oldest hour
	// prefix); zero when the store holds nothing.
	Oldest time.Time
}

// Events sums the events of the units removed that know theirs, and says whether all of them did.
func (r PruneReport) Events() (n int64, exact bool) {
	exact = true
	for _, u := range r.Removed {
		if u.Events < 0 {
			exact = false
			continue
		}
		n += u.Events
	}
	return n, exact
}

// Bytes sums the bytes of the units removed.
func (r PruneReport) Bytes() (n int64) {
	for _, u := range r.Removed {
		if u.Bytes > 0 {
			n += u.Bytes
		}
	}
	return n
}

// PrunedUnit is one unit of storage that Prune removed: a partition or an hour prefix.
type PrunedUnit struct {
	// Name says which: "application_logs_p20261101", "logs/2026/11/01/13/".
	Name string
	// From and To are the time range it held, [From, To); From is zero for a range without a lower
	// bound (the partition that holds the rows of a table converted to partitions).
	From, To time.Time
	// Events is how many events it held (for PostgreSQL the planner's estimate), -1 when unknown.
	Events int64
	// Bytes is its size on disk or in the store, -1 when unknown.
	Bytes int64
	// Objects is how many objects (blobs, files) it held; 0 for a partition.
	Objects int
}

// PruneLocker is implemented by an opened sink type that can hold a lock shared by every process that
// uses the same store (pgsink: a PostgreSQL advisory lock), so that one process at a time prunes.
type PruneLocker interface {
	// TryPruneLock takes the lock unless another process holds it; ok is false then. unlock releases
	// it. A lost connection releases it too.
	TryPruneLock(ctx context.Context) (unlock func(), ok bool, err error)
}
